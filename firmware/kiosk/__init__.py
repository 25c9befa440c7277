# Kiosk controller firmware. Submodules are imported where used, so a board
# only spends RAM on what it runs.
