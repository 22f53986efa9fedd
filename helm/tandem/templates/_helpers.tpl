{{/* Names, labels and the values the templates derive. */}}

{{- define "tandem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
The resource name prefix. At most 40 characters: the RayCluster shares it, and KubeRay
appends "-head-svc" and pod suffixes to a name of at most 53.
*/}}
{{- define "tandem.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tandem.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tandem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tandem.labels" -}}
helm.sh/chart: {{ include "tandem.chart" . }}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tandem
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of Ray pods. No app.kubernetes.io/name: KubeRay sets it to "kuberay" and its head
Service selects on it, so overriding it would cut the workers off the head.
*/}}
{{- define "tandem.rayPodLabels" -}}
helm.sh/chart: {{ include "tandem.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tandem
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tandem.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Ray's head Service, created by KubeRay as <RayCluster name>-head-svc. */}}
{{- define "tandem.rayHeadAddress" -}}
{{- printf "%s-head-svc.%s.svc:6379" (include "tandem.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "tandem.routerName" -}}
{{- printf "%s-router" (include "tandem.fullname" .) }}
{{- end }}

{{- define "tandem.redisName" -}}
{{- printf "%s-redis" (include "tandem.fullname" .) }}
{{- end }}

{{/* The Secret and key holding the Redis password; empty name: no AUTH. */}}
{{- define "tandem.redisSecretName" -}}
{{- if eq .Values.redis.mode "builtin" }}
{{- default (include "tandem.redisName" .) .Values.redis.builtin.existingSecret }}
{{- else }}
{{- .Values.redis.external.existingSecret }}
{{- end }}
{{- end }}

{{- define "tandem.redisSecretKey" -}}
{{- if eq .Values.redis.mode "builtin" }}
{{- .Values.redis.builtin.existingSecretPasswordKey }}
{{- else }}
{{- .Values.redis.external.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{/* The store URL without the password; the router adds it from the Secret at start. */}}
{{- define "tandem.redisUrl" -}}
{{- if eq .Values.redis.mode "builtin" }}
{{- printf "redis://%s.%s.svc:6379/0" (include "tandem.redisName" .) .Release.Namespace }}
{{- else }}
{{- required "redis.external.url is required when redis.mode is external" .Values.redis.external.url }}
{{- end }}
{{- end }}

{{- define "tandem.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "tandem.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{- define "tandem.authSecretName" -}}
{{- default (printf "%s-api-keys" (include "tandem.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "tandem.tlsServerName" -}}
{{- default (printf "%s.%s.svc" (include "tandem.routerName" .) .Release.Namespace) .Values.tls.serverName }}
{{- end }}

{{/* Where the router's Secrets are mounted; the config names these files. */}}
{{- define "tandem.tlsDir" -}}/etc/tandem/tls{{- end }}
{{- define "tandem.tlsClientDir" -}}/etc/tandem/tls-client{{- end }}
{{- define "tandem.apiKeysFile" -}}/etc/tandem/auth/api-keys{{- end }}

{{/* "true" when the router requires client certificates (mTLS); empty otherwise. */}}
{{- define "tandem.mutualTLS" -}}
{{- if and .Values.tls.enabled .Values.tls.clientAuth.enabled }}true{{ end }}
{{- end }}

{{/* Refuse TLS switches that cannot work, with a message naming the values to set. */}}
{{- define "tandem.checkTLS" -}}
{{- if and .Values.tls.clientAuth.enabled (not .Values.tls.enabled) }}
{{- fail "tls.clientAuth.enabled needs tls.enabled" }}
{{- end }}
{{- if include "tandem.mutualTLS" . }}
{{- if not .Values.tls.clientAuth.existingSecret }}
{{- fail "tls.clientAuth.enabled needs tls.clientAuth.existingSecret: a client certificate for the probes, helm test and the ServiceMonitor (kubelet probes cannot present one)" }}
{{- end }}
{{- if and (not .Values.tls.existingSecret) (not .Values.tls.ca) }}
{{- fail "tls.clientAuth.enabled needs tls.ca (ca.crt: the CA client certificates must chain to)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Arguments of tandem_k8s.py that make a gRPC client speak TLS to the router: the CA, the
certificate's name, and with mTLS the client certificate.
*/}}
{{- define "tandem.tlsClientArgs" -}}
- --tls-ca
- {{ printf "%s/ca.crt" (include "tandem.tlsDir" .) }}
- --server-name
- {{ include "tandem.tlsServerName" . | quote }}
{{- if include "tandem.mutualTLS" . }}
- --tls-cert
- {{ printf "%s/tls.crt" (include "tandem.tlsClientDir" .) }}
- --tls-key
- {{ printf "%s/tls.key" (include "tandem.tlsClientDir" .) }}
{{- end }}
{{- end }}

{{/* Environment shared by every Tandem container: no telemetry, Ray's token auth off. */}}
{{- define "tandem.commonEnv" -}}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: RAY_AUTH_MODE
  value: disabled
- name: LMCACHE_TRACK_USAGE
  value: "false"
- name: DO_NOT_TRACK
  value: "1"
- name: PYTHONUNBUFFERED
  value: "1"
{{- end }}

{{/* Ray resources of one pool's worker group: {"tandem_<pool>": workersPerPod}. */}}
{{- define "tandem.poolRayResources" -}}
{{- $pool := index .root.Values.pools .pool }}
{{- dict (printf "tandem_%s" .pool) (int $pool.workersPerPod) | toJson }}
{{- end }}

{{/*
The cluster config (cluster/config.py schema): config values plus what the chart derives.
In colocated mode only the decode pool exists (cluster/ray_runtime.py).
*/}}
{{- define "tandem.clusterConfig" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $pools := dict }}
{{- range $pool := list "prefill" "decode" }}
{{- $p := index $.Values.pools $pool }}
{{- $gpus := 0 }}
{{- if eq $.Values.accelerator "nvidia" }}{{ $gpus = int $p.gpusPerWorker }}{{ end }}
{{- $_ := set $pools $pool (dict "workers" (mul $p.replicas $p.workersPerPod) "cpus_per_worker" (int $p.cpusPerWorker) "gpus_per_worker" $gpus "max_restarts" (int $p.maxRestarts)) }}
{{- end }}
{{- $_ := set $cfg "pools" $pools }}
{{- $_ := set $cfg.model "device" (ternary "cuda" "cpu" (eq .Values.accelerator "nvidia")) }}
{{- $_ := set $cfg.store "url" (include "tandem.redisUrl" .) }}
{{- $_ := set $cfg.router "host" "0.0.0.0" }}
{{- $_ := set $cfg.router "grpc_port" (int .Values.router.grpc.port) }}
{{- if .Values.router.metrics.enabled }}
{{- $_ := set $cfg.router "metrics_port" (int .Values.router.metrics.port) }}
{{- end }}
{{- if .Values.router.http.enabled }}
{{- $_ := set $cfg.router "http_port" (int .Values.router.http.port) }}
{{- end }}
{{- /* The router binds 0.0.0.0: without keys it refuses to start unless auth is off explicitly. */}}
{{- $auth := default (dict) $cfg.router.auth }}
{{- $_ := set $auth "enabled" .Values.auth.enabled }}
{{- if .Values.auth.enabled }}
{{- $_ := set $auth "keys_file" (include "tandem.apiKeysFile" .) }}
{{- end }}
{{- $_ := set $cfg.router "auth" $auth }}
{{- /* Several router pods keep the tenant limits in the cluster's Redis, so they hold for the
cluster, and admission plans with the queues the workers report (every router's requests). */}}
{{- $several := or (gt (int .Values.router.replicas) 1) .Values.router.autoscaling.enabled }}
{{- if $several }}
{{- $limits := default (dict) $cfg.router.limits }}
{{- $_ := set $limits "shared_url" (include "tandem.redisUrl" .) }}
{{- $_ := set $cfg.router "limits" $limits }}
{{- end }}
{{- $admission := default (dict) $cfg.router.admission }}
{{- $_ := set $admission "worker_queues" $several }}
{{- $_ := set $cfg.router "admission" $admission }}
{{- if .Values.tls.enabled }}
{{- $dir := include "tandem.tlsDir" . }}
{{- $tls := dict "cert" (printf "%s/tls.crt" $dir) "key" (printf "%s/tls.key" $dir) }}
{{- if include "tandem.mutualTLS" . }}
{{- $_ := set $tls "client_ca" (printf "%s/ca.crt" $dir) }}
{{- end }}
{{- $_ := set $cfg.router "tls" $tls }}
{{- end }}
{{- $_ := set $cfg.ray "address" "auto" }}
{{- $_ := set $cfg.ray "include_dashboard" false }}
{{- /* The pools live as long as the RayCluster: router pods come and go (replicas, updates). */}}
{{- $_ := set $cfg.ray "keep_pools" true }}
{{- /* An upgrade's routers replace pools of another config; older router pods then refuse to start. */}}
{{- $_ := set $cfg.ray "pools_generation" (int .Release.Revision) }}
{{- toYaml $cfg }}
{{- end }}

{{/* The models volume mount and volume, when models.volume is set. */}}
{{- define "tandem.modelsMount" -}}
{{- if .Values.models.volume }}
- name: models
  mountPath: {{ .Values.models.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "tandem.modelsVolume" -}}
{{- if .Values.models.volume }}
- name: models
  {{- toYaml .Values.models.volume | nindent 2 }}
{{- end }}
{{- end }}
