"""Provisioning a consortium: its CA and certificates, the manifest-signing key, and the
kits (files and documents) staged for each site and for the coordinator."""
