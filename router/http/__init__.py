"""The router's OpenAI-compatible HTTP front end (aiohttp.web) and its metrics listener."""
