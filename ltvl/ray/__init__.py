"""Ray adapters: a Train worker that runs one IMP chain under DDP, and a Tune trainable per
chain. The science core never imports this package."""
