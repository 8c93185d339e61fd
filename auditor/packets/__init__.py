"""Packet captures: reading, writing and live capture (pcap, pcapng)."""
