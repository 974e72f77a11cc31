"""Names across hosts: the node agent answers, for the containers of this
host, the names of every container of the same network on any host, and
forwards every other question to the server the container was asking."""
