"""The proxy's decisions, pure: no mitmproxy, no network, no clock. The addons gather facts,
call `decide`, and apply the answer; everything here can be tested with plain values."""
