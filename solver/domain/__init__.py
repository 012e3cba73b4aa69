"""The domain XML edge: libvirt domain XML in, the same document planned out.

The way from XML in to XML out, one module per step:

* :mod:`.parse`    bytes -> a :class:`~.parse.Document` (hardened lxml tree + the exact bytes)
* :mod:`.classify` which device model each element of ``<devices>`` is (the device table's rows)
* :mod:`.read`     Document -> a :class:`~.read.Domain`: what has an address (kept), what libvirt
                   would still place, what it adds by itself at define
* :mod:`.plan`     Domain + headroom -> a plan (the solver is called here, through
                   :func:`topo_solve.extend.plan_existing`) -> the edit
* :mod:`.edit`     the plan written into the document's own text, nothing else changed
* :mod:`.write`    a plan of a new guest (a spec) -> a complete domain XML
* :mod:`.predict`  Domain -> what libvirt stores after ``virsh define`` (an independent model of
                   libvirt's own assignment, for ``audit`` and ``check`` of a guest never defined);
                   :mod:`.host` reads what libvirt reads from the host for it, :mod:`.indexes` the
                   controller order and indexes libvirt gives

Nothing in the solver imports this package; it imports the solver.
"""
