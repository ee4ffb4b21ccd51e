"""Repository-level pytest configuration: the plugin's own tests drive it through pytester."""

pytest_plugins = ("pytester",)
