# The hardware layer: the board file (what is wired where), hal (the only
# code that touches `machine`), and one driver per device, each handed
# ready pin and bus objects by hal. Nothing here knows about operations,
# the journal or the network.
