"""BGP with BIRD 2 (CALICO_NETWORKING_BACKEND=bird): a view of the agent's
follower that configures the one BIRD the agent runs.

peers.py computes this node's peers as calico/node's confd does;
birdconfig.py renders bird.cfg from them and the node's blocks (pure);
view.py is the follower view that feeds both and hands the text to
daemon.py, which checks, writes and applies it (control.py: BIRD's control
socket) and supervises BIRD.

May import: agent.routing (the ClusterState, which pools are plain),
datastore.
"""
