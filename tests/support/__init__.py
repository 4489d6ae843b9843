"""What the root suites share: network namespaces and a packet capture (netns), the agent run
inside a namespace (agent, lab_agent), the core topology, the lab's bench (harness), a plain
client tor in the lab (client) and the fault-injection tracer (tracekill).

This stack is deliberately the tests' own: it does not reuse src/netspectre/lab's agents,
clients or capture code, because an oracle that shares code with what it judges shares its bugs.
The one import from the package is the pcap frame reader (netspectre.lab.pcap), re-exported by
netns. agent.py and tracekill.py are run by path inside namespaces (stdlib only); lab_agent is
run as `python -m tests.support.lab_agent` from the checkout's root.
"""
