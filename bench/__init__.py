"""Benchmarks of certd side by side with certbot and lego on a local ACME bed."""
