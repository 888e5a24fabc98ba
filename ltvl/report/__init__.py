"""Reports: the paper's tables and figures regenerated from tracked runs (``ltvl report``)."""
