"""auditor's offline stand-in for the internet: origin servers and a PKI on loopback."""
