"""Small, fast configurations of every registered network, shared by the network, module and CLI
tests: read from each network's registration (``networks.registry.SmokeSettings``), so a new
network is tested without editing any test."""

from networks import list_networks, smoke_settings

SETTINGS = {name: smoke_settings(name) for name in list_networks()}
# name -> (small constructor arguments, an input size the network takes).
SMALL = {name: (dict(s.kwargs), tuple(s.input_size)) for name, s in SETTINGS.items() if s is not None}
# These need at least two input channels (one stream per modality).
MULTI_STREAM = {name for name, s in SMALL.items() if SETTINGS[name].min_in_channels > 1}
