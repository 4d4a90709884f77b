"""Local tooling: a real OCI registry on loopback, real images, and the local workflow run."""
