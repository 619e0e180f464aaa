"""Schema migrations, shipped in the wheel as package data of `gateway.migrations`."""
