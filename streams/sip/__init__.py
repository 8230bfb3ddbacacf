"""The SIP front-end node (``regstate frontend``): parser, digest auth, registrar, transport.

``message`` parses and renders SIP requests (no I/O); ``digest`` checks RFC 7616
credentials against HA1 hashes; ``users`` keeps those hashes in a file under the
data directory.
"""
