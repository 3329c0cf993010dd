"""The production shape rehearsed on one machine (`deploy/rehearse`): namespaces, stores, replicas, load, events."""
