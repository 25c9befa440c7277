# The field team's side: inspection and service actions at the USB REPL.
