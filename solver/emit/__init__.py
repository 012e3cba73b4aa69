"""Forms of a plan for the tools that take it: all made from the same layout.

* :mod:`.stack`   the command lines and files the virtualization stack takes: virt-install options
                  for a new guest, virt-xml lines and ``virsh attach-device --config`` files for an
                  extension;
* :mod:`.picture` a drawing of the topology, as SVG (written directly) or Graphviz dot.

Nothing here decides anything: the plan has every index, address and target; these modules only
spell it in another syntax.
"""
