#!/usr/bin/python3
"""Two NNCP nodes that know each other, for tests: writes DIR/station.hjson and
DIR/hub.hjson (spools and logs under DIR), each node naming the other as a neighbour
whose `ferrymail` exec handle runs the given command.

Usage: nncp_pair.py DIR STATION_HANDLER HUB_HANDLER
(STATION_HANDLER runs at the station for what the hub sends, and the other way round.)
Needs nncp-cfgnew. Standard library only.
"""
import json
import os
import re
import subprocess
import sys

KEYS = ("id", "exchpub", "exchprv", "signpub", "signprv", "noisepub", "noiseprv")


def new_node():
    text = subprocess.run(["nncp-cfgnew", "-nocomments"], check=True,
                          capture_output=True, text=True).stdout
    self_block = text.split("neigh:")[0]
    return {k: re.search(rf"\b{k}: (\S+)", self_block).group(1) for k in KEYS}


def public(node):
    return {k: node[k] for k in ("id", "exchpub", "signpub", "noisepub")}


def write(path, name, me, other_name, other, handler, spool):
    os.makedirs(spool, exist_ok=True)
    neigh_self = public(me)
    neigh_other = public(other)
    neigh_other["exec"] = {"ferrymail": [handler]}
    config = {
        "spool": spool,
        "log": os.path.join(spool, "log"),
        "self": me,
        "neigh": {"self": neigh_self, other_name: neigh_other},
    }
    with open(path, "w") as f:
        json.dump(config, f, indent=2)


def main():
    out, station_handler, hub_handler = sys.argv[1:4]
    station, hub = new_node(), new_node()
    write(os.path.join(out, "station.hjson"), "station", station, "hub", hub,
          station_handler, os.path.join(out, "station-spool"))
    write(os.path.join(out, "hub.hjson"), "hub", hub, "station", station,
          hub_handler, os.path.join(out, "hub-spool"))


main()
