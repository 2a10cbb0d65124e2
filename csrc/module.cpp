// The Python module swishkernels._C is empty: importing it loads this library, whose static
// initialisers (TORCH_LIBRARY in ops.cpp) register the ops under torch.ops.swishkernels.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "swishkernels._C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
