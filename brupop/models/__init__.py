"""Pure data: the BottlerocketShadow resource (v1 and v2), the host update API's wire format, their
conversions and the CRD schema derived from them. Nothing here does I/O or imports another brupop package.
"""
