#!/usr/bin/env python3
"""A strict Route53 emulator for the tests and benchmarks (Python standard library only).

It speaks the part of the Route53 REST API vantage and the tests use (CreateHostedZone,
GetHostedZone, ListResourceRecordSets, ChangeResourceRecordSets, GetChange) and enforces the
API reference's rules, which moto (5.x) does not all enforce. Each rule names its source:

  [batch]   ChangeResourceRecordSets: "Change batches are considered transactional changes.
            Route 53 validates the changes in the request and then either makes all or none of
            the changes in the change batch request."
            https://docs.aws.amazon.com/Route53/latest/APIReference/API_ChangeResourceRecordSets.html
  [delete]  Change.Action DELETE "deletes an existing resource record set that has the
            specified values": name, type, set identifier, TTL, weight and values must all
            match ("... but it was not found" / "... but the values provided do not match the
            current values").  https://docs.aws.amazon.com/Route53/latest/APIReference/API_Change.html
  [create]  CREATE "creates a resource record set that has the specified values"; it fails
            only while a set with that name, type and set identifier exists ("... but it
            already exists"); a DELETE earlier in the same batch makes room for it.
  [upsert]  UPSERT creates the set or replaces its values.
  [limits]  At most 1,000 ResourceRecord elements and 32,000 characters of values per
            request; an UPSERT counts twice.
            https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/DNSLimitations.html#limits-api-requests
  [mixed]   A weighted and a non-weighted set cannot share a name and type, nor sets of two
            routing policies (weighted, latency by Region); a CNAME cannot
            share a name with any other type. (Route53 error messages "... cannot be created as
            a non-weighted set exists ..." and "... is not permitted because a conflicting
            RRSet ...".)
  [zone]    A record set must be in the hosted zone ("... is not permitted in zone ...").
  [order]   ListResourceRecordSets sorts "by DNS name, with the labels reversed", then by type,
            then by set identifier; StartRecordName/Type/Identifier start the listing at that
            position; MaxItems is at most 300; NextRecord* name the next set when truncated.
            https://docs.aws.amazon.com/Route53/latest/APIReference/API_ListResourceRecordSets.html
  [change]  Every change has a unique id and is PENDING for a while, then INSYNC (GetChange).
            https://docs.aws.amazon.com/Route53/latest/APIReference/API_GetChange.html
  [rate]    "All requests - Five requests per second per AWS account": more is answered with
            400 Throttling ("Rate exceeded").
            https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/DNSLimitations.html#limits-api-requests

Test controls (not part of the API), under /_emulator/:
  POST /_emulator/refuse   {"names": ["bad.example.com."]}: batches touching those names are
                           refused with InvalidChangeBatch (as Route53 refuses a value it will
                           not take), the whole batch, as [batch] says.
  GET  /_emulator/calls    every API call: {"op", "unix" (wall-clock seconds), "status"}.
  GET  /_emulator/state    every zone's record sets.

Usage: emulator.py --port PORT [--pending SECONDS] [--rate PER_SECOND]
"""

import argparse
import json
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

NS = "https://route53.amazonaws.com/doc/2013-04-01/"
MAX_ITEMS = 300
MAX_RECORDS = 1000
MAX_CHARS = 32000

LOCK = threading.Lock()
ZONES = {}  # id -> {"name": str, "sets": {(name, type, ident): set}}
CHANGES = {}  # id -> (submitted monotonic, submitted iso)
CALLS = []
REFUSED = set()
OPTIONS = None
WINDOW = []  # monotonic times of the calls in the last second


class Refused(Exception):
    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def norm(name):
    name = name.lower()
    return name if name.endswith(".") else name + "."


def sort_key(s):
    labels = s["name"].rstrip(".").split(".")
    return (list(reversed(labels)), s["type"], s.get("ident") or "")


def tag(el, name):
    return el.find("{%s}%s" % (NS, name))


def text(el, name, default=None):
    found = tag(el, name) if el is not None else None
    return found.text if found is not None and found.text is not None else default


def parse_set(el):
    s = {
        "name": norm(text(el, "Name", "")),
        "type": text(el, "Type", ""),
        "ident": text(el, "SetIdentifier"),
        "weight": None,
        "region": text(el, "Region"),
        "ttl": None,
        "values": [],
        "other": False,
    }
    if text(el, "Weight") is not None:
        s["weight"] = int(text(el, "Weight"))
    if text(el, "TTL") is not None:
        s["ttl"] = int(text(el, "TTL"))
    records = tag(el, "ResourceRecords")
    if records is not None:
        for r in records:
            s["values"].append(text(r, "Value", ""))
    for routing in ("AliasTarget", "GeoLocation", "Failover", "HealthCheckId",
                    "MultiValueAnswer", "CidrRoutingConfig", "GeoProximityLocation"):
        if tag(el, routing) is not None:
            s["other"] = True
    return s


def key(s):
    return (s["name"], s["type"], s.get("ident"))


def describe(s):
    return "[name='%s', type='%s'%s]" % (
        s["name"], s["type"], ", set-identifier='%s'" % s["ident"] if s.get("ident") else "")


def same_values(a, b):
    return (a["ttl"] == b["ttl"] and a.get("weight") == b.get("weight")
            and a.get("region") == b.get("region") and sorted(a["values"]) == sorted(b["values"]))


def check_value(s):
    for v in s["values"]:
        if s["type"] == "A" and not re.fullmatch(r"(\d{1,3})(\.\d{1,3}){3}", v):
            raise Refused("InvalidChangeBatch", "ARRDATAIllegalIPv4Address (Value is not a valid IPv4 address) encountered with '%s'" % v)
        if s["type"] == "TXT" and not (v.startswith('"') and v.endswith('"')):
            raise Refused("InvalidChangeBatch", "Invalid Resource Record: FATAL problem: InvalidCharacterString (Value should be enclosed in quotation marks) encountered with '%s'" % v)
    if s.get("weight") is not None and not 0 <= s["weight"] <= 255:
        raise Refused("InvalidChangeBatch", "Weight must be between 0 and 255")
    if not s["values"] and not s["other"]:
        raise Refused("InvalidInput", "Invalid request: Expected exactly one of [AliasTarget, all of [TTL, and ResourceRecords], or TrafficPolicyInstanceId], but found none in Change with [Action=CREATE, Name=%s, Type=%s]" % (s["name"], s["type"]))


def apply_batch(zone, changes):
    """[batch]: validate every change against a copy, then swap: all or nothing."""
    sets = dict(zone["sets"])
    records = sum(len(s["values"]) * (2 if a == "UPSERT" else 1) for a, s in changes)
    chars = sum(sum(len(v) for v in s["values"]) * (2 if a == "UPSERT" else 1) for a, s in changes)
    if records > MAX_RECORDS:  # [limits]
        raise Refused("InvalidChangeBatch", "Number of records limit of %d exceeded." % MAX_RECORDS)
    if chars > MAX_CHARS:
        raise Refused("InvalidChangeBatch", "Number of characters limit of %d exceeded." % MAX_CHARS)
    messages = []
    for action, s in changes:
        if s["name"] in REFUSED:
            messages.append("RRSet of type %s with DNS name %s is not permitted (refused by the emulator's test control)" % (s["type"], s["name"]))
            continue
        zname = zone["name"]
        if not (s["name"] == zname or s["name"].endswith("." + zname)):  # [zone]
            messages.append("RRSet with DNS name %s is not permitted in zone %s" % (s["name"], zname))
            continue
        k = key(s)
        if action == "DELETE":  # [delete]
            have = sets.get(k)
            if have is None:
                messages.append("Tried to delete resource record set %s but it was not found" % describe(s))
            elif not same_values(have, s):
                messages.append("Tried to delete resource record set %s but the values provided do not match the current values" % describe(s))
            else:
                del sets[k]
            continue
        try:
            check_value(s)
        except Refused as e:
            if e.code != "InvalidChangeBatch":
                raise
            messages.append(e.message)
            continue
        if action == "CREATE" and k in sets:  # [create]
            messages.append("Tried to create resource record set %s but it already exists" % describe(s))
            continue
        for other in sets.values():  # [mixed]
            if other["name"] != s["name"] or key(other) == k:
                continue
            if other["type"] == s["type"] and other.get("ident") and s.get("ident") and (
                    (other.get("weight") is None) != (s.get("weight") is None)):
                messages.append("RRSet with DNS name %s, type %s cannot be created because another set with the same name and type uses a different routing policy" % (
                    s["name"], s["type"]))
                break
            if other["type"] == s["type"] and bool(other.get("ident")) != bool(s.get("ident")):
                messages.append("RRSet with DNS name %s, type %s cannot be created as a %s set exists with the same name and type" % (
                    s["name"], s["type"], "non-weighted" if s.get("ident") else "weighted"))
                break
            if "CNAME" in (other["type"], s["type"]) and other["type"] != s["type"]:
                messages.append("RRSet of type %s with DNS name %s is not permitted because a conflicting RRSet of type %s with the same DNS name already exists in zone %s" % (
                    s["type"], s["name"], other["type"], zone["name"]))
                break
        else:
            sets[k] = s  # CREATE or [upsert]
    if messages:
        raise Refused("InvalidChangeBatch", "; ".join(messages))
    zone["sets"] = sets


def new_change():
    cid = "C" + uuid.uuid4().hex[:20].upper()
    CHANGES[cid] = (time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
    return cid


def change_info(cid):
    submitted, iso = CHANGES[cid]
    status = "INSYNC" if time.monotonic() - submitted >= OPTIONS.pending else "PENDING"  # [change]
    return "<ChangeInfo><Id>/change/%s</Id><Status>%s</Status><SubmittedAt>%s</SubmittedAt></ChangeInfo>" % (cid, status, iso)


def esc(v):
    return (v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def set_xml(s):
    out = "<ResourceRecordSet><Name>%s</Name><Type>%s</Type>" % (esc(s["name"]), s["type"])
    if s.get("ident"):
        out += "<SetIdentifier>%s</SetIdentifier>" % esc(s["ident"])
    if s.get("weight") is not None:
        out += "<Weight>%d</Weight>" % s["weight"]
    if s.get("region"):
        out += "<Region>%s</Region>" % esc(s["region"])
    if s.get("ttl") is not None:
        out += "<TTL>%d</TTL>" % s["ttl"]
    if s["values"]:
        out += "<ResourceRecords>%s</ResourceRecords>" % "".join(
            "<ResourceRecord><Value>%s</Value></ResourceRecord>" % esc(v) for v in s["values"])
    return out + "</ResourceRecordSet>"


def list_sets(zone, query):
    ordered = sorted(zone["sets"].values(), key=sort_key)
    name = query.get("name", [None])[0]
    rtype = query.get("type", [None])[0]
    ident = query.get("identifier", [None])[0]
    if rtype and not name:
        raise Refused("InvalidInput", "The input is not valid: Type requires Name")
    maxitems = min(int(query.get("maxitems", [MAX_ITEMS])[0]), MAX_ITEMS)
    if name:  # [order]
        start = sort_key({"name": norm(name), "type": rtype or "", "ident": ident or ""})
        ordered = [s for s in ordered if sort_key(s) >= start]
    page, rest = ordered[:maxitems], ordered[maxitems:]
    out = "<ResourceRecordSets>%s</ResourceRecordSets>" % "".join(set_xml(s) for s in page)
    out += "<IsTruncated>%s</IsTruncated><MaxItems>%d</MaxItems>" % ("true" if rest else "false", maxitems)
    if rest:
        nxt = rest[0]
        out += "<NextRecordName>%s</NextRecordName><NextRecordType>%s</NextRecordType>" % (esc(nxt["name"]), nxt["type"])
        if nxt.get("ident"):
            out += "<NextRecordIdentifier>%s</NextRecordIdentifier>" % esc(nxt["ident"])
    return "<ListResourceRecordSetsResponse xmlns=\"%s\">%s</ListResourceRecordSetsResponse>" % (NS, out)


def zone_xml(zid, zone):
    return ("<HostedZone><Id>/hostedzone/%s</Id><Name>%s</Name><CallerReference>%s</CallerReference>"
            "<Config><PrivateZone>false</PrivateZone></Config><ResourceRecordSetCount>%d</ResourceRecordSetCount></HostedZone>"
            % (zid, esc(zone["name"]), esc(zone["ref"]), len(zone["sets"])))


DELEGATION = "<DelegationSet><NameServers><NameServer>ns-1.emulator.invalid</NameServer></NameServers></DelegationSet>"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="text/xml", headers=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def error(self, e):
        self.reply(e.status, "<ErrorResponse xmlns=\"%s\"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>"
                   % (NS, e.code, esc(e.message), uuid.uuid4()))

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def route(self, method):
        url = urlparse(self.path)
        path = url.path.rstrip("/")
        query = parse_qs(url.query)
        body = self.body()
        if path.startswith("/_emulator/"):
            return self.control(method, path, body)
        op = "unknown"
        status = 200
        try:
            with LOCK:
                if method == "POST" and path == "/2013-04-01/hostedzone":
                    op = "CreateHostedZone"
                elif method == "GET" and re.fullmatch(r"/2013-04-01/hostedzone/[^/]+", path):
                    op = "GetHostedZone"
                elif re.fullmatch(r"/2013-04-01/hostedzone/[^/]+/rrset", path):
                    op = "ChangeResourceRecordSets" if method == "POST" else "ListResourceRecordSets"
                elif method == "GET" and path.startswith("/2013-04-01/change/"):
                    op = "GetChange"
                now = time.monotonic()
                if OPTIONS.rate:  # [rate]
                    while WINDOW and now - WINDOW[0] >= 1.0:
                        WINDOW.pop(0)
                    if len(WINDOW) >= OPTIONS.rate:
                        raise Refused("Throttling", "Rate exceeded")
                    WINDOW.append(now)
                out = self.api(op, method, path, query, body)
        except Refused as e:
            status = e.status
            with LOCK:
                CALLS.append({"op": op, "unix": time.time(), "status": status, "error": e.code})
            return self.error(e)
        with LOCK:
            CALLS.append({"op": op, "unix": time.time(), "status": out[0]})
        self.reply(*out)

    def api(self, op, method, path, query, body):
        if op == "CreateHostedZone":
            req = ET.fromstring(body)
            name = norm(text(req, "Name", ""))
            zid = "Z" + uuid.uuid4().hex[:12].upper()
            zone = {"name": name, "ref": text(req, "CallerReference", ""), "sets": {}}
            soa = {"name": name, "type": "SOA", "ident": None, "weight": None, "ttl": 900, "other": False,
                   "values": ["ns-1.emulator.invalid. hostmaster.emulator.invalid. 1 7200 900 1209600 86400"]}
            ns = {"name": name, "type": "NS", "ident": None, "weight": None, "ttl": 172800, "other": False,
                  "values": ["ns-1.emulator.invalid."]}
            zone["sets"] = {key(soa): soa, key(ns): ns}
            ZONES[zid] = zone
            cid = new_change()
            return (201, "<CreateHostedZoneResponse xmlns=\"%s\">%s%s%s</CreateHostedZoneResponse>"
                    % (NS, zone_xml(zid, zone), change_info(cid), DELEGATION), "text/xml",
                    [("Location", "/2013-04-01/hostedzone/" + zid)])
        if op == "GetChange":
            cid = path.rsplit("/", 1)[1]
            if cid not in CHANGES:
                raise Refused("NoSuchChange", "A change with the specified change ID does not exist.", 404)
            return (200, "<GetChangeResponse xmlns=\"%s\">%s</GetChangeResponse>" % (NS, change_info(cid)))
        zid = path.split("/")[3] if len(path.split("/")) > 3 else ""
        zone = ZONES.get(zid)
        if zone is None:
            raise Refused("NoSuchHostedZone", "No hosted zone found with ID: %s" % zid, 404)
        if op == "GetHostedZone":
            return (200, "<GetHostedZoneResponse xmlns=\"%s\">%s%s</GetHostedZoneResponse>" % (NS, zone_xml(zid, zone), DELEGATION))
        if op == "ListResourceRecordSets":
            return (200, list_sets(zone, query))
        if op == "ChangeResourceRecordSets":
            req = ET.fromstring(body)
            batch = tag(req, "ChangeBatch")
            changes = []
            for c in tag(batch, "Changes"):
                changes.append((text(c, "Action", ""), parse_set(tag(c, "ResourceRecordSet"))))
            if not changes:
                raise Refused("InvalidInput", "ChangeBatch must hold at least one change")
            apply_batch(zone, changes)
            cid = new_change()
            return (200, "<ChangeResourceRecordSetsResponse xmlns=\"%s\">%s</ChangeResourceRecordSetsResponse>" % (NS, change_info(cid)))
        raise Refused("InvalidAction", "not emulated: %s %s" % (method, path), 404)

    def control(self, method, path, body):
        with LOCK:
            if method == "POST" and path == "/_emulator/refuse":
                REFUSED.clear()
                REFUSED.update(norm(n) for n in json.loads(body or b"{}").get("names", []))
                return self.reply(200, "{}", "application/json")
            if path == "/_emulator/calls":
                return self.reply(200, json.dumps(CALLS), "application/json")
            if path == "/_emulator/state":
                state = {zid: sorted(({"name": s["name"], "type": s["type"], "ident": s["ident"],
                                       "weight": s["weight"], "region": s.get("region"), "ttl": s["ttl"], "values": sorted(s["values"])}
                                      for s in z["sets"].values()), key=sort_key)
                         for zid, z in ZONES.items()}
                return self.reply(200, json.dumps(state), "application/json")
        self.reply(404, "{}", "application/json")


def main():
    global OPTIONS
    parser = argparse.ArgumentParser(description="strict Route53 emulator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pending", type=float, default=1.0, help="seconds a change stays PENDING")
    parser.add_argument("--rate", type=int, default=0, help="API calls per second before Throttling (0: no limit)")
    OPTIONS = parser.parse_args()
    server = ThreadingHTTPServer((OPTIONS.host, OPTIONS.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
