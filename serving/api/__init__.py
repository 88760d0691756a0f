"""Generated gRPC stubs of protos/weakseg/v1 (scripts/gen_protos.py); do not edit."""
