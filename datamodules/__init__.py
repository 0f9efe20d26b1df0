"""LightningDataModules for partially observed orbits."""
