"""`make bench`: direct vs the auth-proxy sidecar vs stock mitmdump vs Squid ssl-bump, on loopback."""
