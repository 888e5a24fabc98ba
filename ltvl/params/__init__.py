"""Chain parameters: declared once (:mod:`ltvl.params.schema`), resolved once (:mod:`ltvl.params.resolve`)."""
