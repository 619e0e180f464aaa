"""Policy files, shipped in the wheel as package data of `gateway.policies`."""
