"""The daemon's face to dockerd.

app.py is the Flask app (one handler: look the call up, check its body,
call one domain method, answer JSON); calls.py is the call table (each
Docker call, its schema from schemas.py and the method that answers it);
server.py serves it with gunicorn on the plugin sockets; services.py builds
the domain objects in each worker after fork; config.py reads the one
Config; startup.py prepares etcd and the host before serving;
agent_process.py supervises the node agent child; metrics.py binds the
metrics port and gives the workers their multiprocess directory; cli/ is
the command line.

May import: driver, ipam, datastore, kernel, agent, metrics.  Nothing imports plugin; Flask
and gunicorn are used only here.  See ARCHITECTURE.md.
"""
