"""Provenance: every output says it is synthetic — container metadata, C2PA Content Credentials, and an invisible
watermark in the pixels — and ``faceweave verify`` reads all three back."""
