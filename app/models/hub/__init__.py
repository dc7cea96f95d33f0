"""Models from the Hugging Face Hub: what may be downloaded and how (:mod:`.policy`: allow-list,
size cap, reachability probe, cache repair), models named by a Hub id (:mod:`.loading`), and
where downloads are cached and how a failed one is reported (:mod:`.downloads`).
"""
