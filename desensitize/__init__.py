"""脱敏: masking for the 共享/开放 layer, driven by the catalogue (docs/masking.md).

rules.py      masking rules as pure polars expressions (keep first/last, redact, generalise …)
pseudonym.py  keyed HMAC tokens (key from GONGSHU_PSEUDONYM_KEY, key id with every output)
fpe.py        format-preserving tokens for 公民身份号码 that still pass validators
policy.py     which rule each column of each share/open output gets; errors for columns without one
masking.py    a policy applied to base-library rows (the pure core of a share asset)
kanon.py      k-anonymity of open data: local generalisation, then suppression
export.py     open-data files: CSV (UTF-8) + data dictionary + JSON
leaks.py      the leak scanner: raw identifiers of the base libraries in anything published
"""
