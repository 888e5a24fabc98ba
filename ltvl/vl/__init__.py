"""The VL assembly: backbones, tasks and datasets, put together into what the core trains."""
