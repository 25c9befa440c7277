# The kiosk's own logic: the controller and its operations, the stock book,
# operation records on flash, the journal and the temperature accounting.
# It keeps the hardware safe without the network and never imports the link.
