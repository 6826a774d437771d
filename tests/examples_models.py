"""Make examples/models.py importable from the tests."""

import importlib.util
import pathlib

_path = pathlib.Path(__file__).parent.parent / "examples" / "models.py"
_spec = importlib.util.spec_from_file_location("examples_models_impl", _path)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

two_link_arm = _module.two_link_arm
spring_chain = _module.spring_chain
