"""Sources of identities and keys: files, remote endpoints and the SPIFFE Workload API."""

from zerotrust.sources.files import FileBundleSource, FileSvidSource

__all__ = ["FileBundleSource", "FileSvidSource"]
