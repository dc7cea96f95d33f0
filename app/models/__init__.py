"""Explainable models: the interface (:mod:`.base`), the registry of named models
(:mod:`.registry`), adapters per library family (:mod:`.adapters`), the named ready-made models
(:mod:`.zoo`), Hugging Face Hub policy and loading (:mod:`.hub`), and the helpers they share:
safe weight files (:mod:`.weights`), image preprocessing (:mod:`.preprocess`) and process-wide
sharing of heavy objects (:mod:`.sharing`). ``python -m app.models.prefetch`` fills the caches.
"""
