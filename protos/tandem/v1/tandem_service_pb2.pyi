from protos.tandem.v1 import generate_pb2 as _generate_pb2
from protos.tandem.v1 import info_pb2 as _info_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
