"""The lab floor: the only part of siplab that knows every component.

The lab model, the process supervisor, the control plane, the ``Lab`` API, scenarios, the
``siplab`` CLI and the pytest plugin. Nothing below this package (``emulator.sip``, the event
catalogue, the component scaffold, the components) imports from it.
"""
