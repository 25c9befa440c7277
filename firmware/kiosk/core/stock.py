# The stock book: which order sits in which bin, and which bins a reset left
# uncertain until a technician looks. Kept on flash (stock.json) and
# changed only after the door cycle that moved the medicine ended, so the
# book never shows medicine that left, nor a bin as empty that is not.
from kiosk import files
from kiosk.contract import K_PICKUP, K_RETRIEVE, K_STOCK, STOCK_MOVES

PATH = "stock.json"


class Stock:
    def __init__(self, path=PATH):
        self.path = path
        saved = files.read_json(path, {})
        self.bins = saved.get("bins", {})            # bin (str) -> order id
        self.unverified = saved.get("unverified", [])  # bins a reset left uncertain

    def save(self):
        files.write_json(self.path, {"bins": self.bins, "unverified": self.unverified})

    def order_in(self, b):
        return self.bins.get(str(b))

    def stocked(self):
        return sorted(int(b) for b in self.bins)

    def put(self, b, order):
        """An order went into bin b (a restock's door cycle ended)."""
        self.bins[str(b)] = order
        if b in self.unverified:
            self.unverified.remove(b)
        self.save()

    def take(self, b):
        """Bin b was emptied (a pickup's or a retrieval's door cycle ended)."""
        self.bins.pop(str(b), None)
        self.save()

    def verify(self, b, present):
        """A technician looked into a bin and says whether its order is
        still there; the bin is certain again either way."""
        if not present:
            self.bins.pop(str(b), None)
        if b in self.unverified:
            self.unverified.remove(b)
        self.save()

    def settle(self, gone):
        """Settle the book after a reset cut an operation short (gone, from
        kiosk.core.jobs.interrupted), saved on flash, and return the
        records to journal about it: medicine a pickup or a retrieval
        released left its bin; an unknown outcome leaves the bin refused
        for pickup until a technician verifies it. The book is saved
        before anything is journaled and the operation forgotten (as the
        live operations do), so a cut anywhere in the closing leaves the
        next boot to close it again, with the book already right. An
        operation whose record was journaled already changed the book."""
        kind = gone.get("kind")
        if kind not in STOCK_MOVES or gone.get("recorded"):
            return []
        args = gone.get("args") or {}
        b = args.get("bin")
        if not isinstance(b, int):
            return []
        out = gone.get("outcome")
        if kind != "restock" and out == "released":
            self.bins.pop(str(b), None)
            rec = {"id": gone["id"], "order": args.get("order"), "bin": b, "recovered": True}
            if isinstance(args.get("scan"), int):
                rec["scan"] = args["scan"]
            if gone.get("by"):
                rec["by"] = gone["by"]
            records = [(K_PICKUP if kind == "pickup" else K_RETRIEVE, rec)]
        elif out != "not_released":
            if b not in self.unverified:
                self.unverified.append(b)
            records = [(K_STOCK, {"bin": b, "ev": "unverified", "after": gone["id"]})]
        else:
            return []
        self.save()
        return records
