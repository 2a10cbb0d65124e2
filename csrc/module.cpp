// The Python module swishkernels._C. Importing it loads this library, whose static initialisers
// (TORCH_LIBRARY in ops.cpp) register the ops under torch.ops.swishkernels.
//
// It also holds the fast entry of sk.swish / sk.mish and of the modules' forward
// (swishkernels/functional.py): a 64-element activation is Python and dispatch overhead, and the
// boxed call of a torch.ops op (arguments parsed against the schema into a stack of IValues) costs
// more than the whole of F.silu's binding. These functions take the tensor through the CPython API
// and call the op through its typed dispatcher handle: the dispatcher still runs every layer
// (autograd, autocast, Python dispatch modes, the JIT tracer), only the boxing is skipped.
// They answer None, and the Python caller takes its checked path, whenever anything beyond a plain
// eager call is going on: not exactly a torch.Tensor (subclasses have __torch_function__), a
// __torch_function__ mode, a torch.func transform, forward-mode AD, the JIT tracer (ONNX export),
// $SWISHKERNELS_BACKEND set, a device whose default backend is not this extension (Python enables
// each device type once it has resolved that; functional.py), or a dtype or layout the op refuses
// (so every error keeps the wording of the Python layer). torch.compile never calls them:
// functional.py tests torch.compiler.is_compiling() first.
#include <Python.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/forward_grad.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdlib>
#include <cstring>

#include "activations.h"
#include "op_handles.h"

namespace swishkernels {
namespace {

// Device types on which the default backend is this extension (set from Python).
bool fast_cpu = false;
bool fast_cuda = false;

// Below this many elements the call holds the GIL (releasing and taking it back costs more than
// the kernel); above, it releases it like PyTorch's own bindings, so other Python threads run.
constexpr int64_t kReleaseGilNumel = 32768;

bool is_supported_dtype(c10::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 ||
         dtype == at::kDouble;
}

// The tensor when the fast entry applies to `obj`, else nullptr (see the file comment).
const at::Tensor* plain_call(PyObject* obj) {
  if (!THPVariable_CheckExact(obj) || at::impl::torch_function_mode_enabled()) {
    return nullptr;
  }
  if (c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode) ||
      torch::autograd::ForwardADLevel::has_any_level() || torch::jit::tracer::isTracing()) {
    return nullptr;
  }
  const char* requested = std::getenv("SWISHKERNELS_BACKEND");
  if (requested != nullptr && requested[0] != '\0') {
    return nullptr;
  }
  const at::Tensor& x = THPVariable_Unpack(obj);
  const c10::DeviceType device = x.device().type();
  const bool enabled = device == c10::DeviceType::CPU ? fast_cpu
                       : device == c10::DeviceType::CUDA ? fast_cuda
                                                         : false;
  if (!enabled || x.layout() != at::kStrided || !is_supported_dtype(x.scalar_type())) {
    return nullptr;
  }
  return &x;
}

at::Tensor call_forward(Activation act, const at::Tensor& x) {
  if (x.numel() >= kReleaseGilNumel) {
    pybind11::gil_scoped_release no_gil;
    return forward_op(act).call(x);
  }
  return forward_op(act).call(x);
}

void call_forward_inplace(Activation act, at::Tensor& x) {
  if (x.numel() >= kReleaseGilNumel) {
    pybind11::gil_scoped_release no_gil;
    return forward_inplace_op(act).call(x);
  }
  forward_inplace_op(act).call(x);
}

// fn(x): f(x), or None when the fast entry does not apply.
template <Activation act>
PyObject* forward(PyObject* /*module*/, PyObject* obj) {
  HANDLE_TH_ERRORS
  const at::Tensor* x = plain_call(obj);
  if (x == nullptr) {
    Py_RETURN_NONE;
  }
  return THPVariable_Wrap(call_forward(act, *x));
  END_HANDLE_TH_ERRORS
}

// f(x) written into x (`obj`, its Python object, returned) when inplace is set and autograd will not
// need x; otherwise a new tensor. A new reference either way.
PyObject* activate_tensor(Activation act, PyObject* obj, const at::Tensor& x, bool inplace) {
  if (inplace && !(x.requires_grad() && at::GradMode::is_enabled())) {
    call_forward_inplace(act, const_cast<at::Tensor&>(x));
    Py_INCREF(obj);
    return obj;
  }
  return THPVariable_Wrap(call_forward(act, x));
}

// fn(x, inplace): what the module forms do (functional.activate): f(x) written into x when inplace
// is True and autograd will not need x; otherwise out of place. None when the fast entry does not
// apply.
template <Activation act>
PyObject* activate(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "activate(x, inplace) takes 2 arguments");
    return nullptr;
  }
  const at::Tensor* x = plain_call(args[0]);
  if (x == nullptr) {
    Py_RETURN_NONE;
  }
  const int inplace = PyObject_IsTrue(args[1]);
  if (inplace < 0) {
    return nullptr;
  }
  return activate_tensor(act, args[0], *x, inplace);
  END_HANDLE_TH_ERRORS
}

// The module forms' call (swishkernels/modules.py: Swish.__call__): nn.Module.__call__ would run
// two Python frames of hook checks before forward; when there is nothing to run but forward, this
// does the same checks in C and then what forward does. None whenever anything more could happen:
// a hook on the module or a global one, Module.compile(), a forward set on the instance, a backend
// named on the module, an attribute missing (another torch version's nn.Module), and everything
// plain_call refuses.
PyObject* global_hook_dicts[4] = {nullptr, nullptr, nullptr, nullptr};

bool is_empty_dict(PyObject* d) {
  return d != nullptr && PyDict_Check(d) && PyDict_GET_SIZE(d) == 0;
}

// true when the module would only run forward; -1 on a Python error.
int only_forward_would_run(PyTypeObject* type, PyObject* dict) {
  static PyObject* names[4] = {
      PyUnicode_InternFromString("_forward_hooks"), PyUnicode_InternFromString("_forward_pre_hooks"),
      PyUnicode_InternFromString("_backward_hooks"),
      PyUnicode_InternFromString("_backward_pre_hooks")};
  static PyObject* compiled = PyUnicode_InternFromString("_compiled_call_impl");
  static PyObject* forward_name = PyUnicode_InternFromString("forward");
  static PyObject* backend = PyUnicode_InternFromString("backend");
  for (PyObject* global : global_hook_dicts) {
    if (!is_empty_dict(global)) {
      return 0;
    }
  }
  for (PyObject* name : names) {
    if (!is_empty_dict(PyDict_GetItemWithError(dict, name))) {
      return PyErr_Occurred() ? -1 : 0;
    }
  }
  if (PyDict_GetItemWithError(dict, backend) != Py_None) {
    return PyErr_Occurred() ? -1 : 0;
  }
  // Module.compile() sets _compiled_call_impl on the instance; nn.Module's class default is None.
  PyObject* compiled_call = PyDict_GetItemWithError(dict, compiled);
  if (compiled_call == nullptr && !PyErr_Occurred()) {
    compiled_call = _PyType_Lookup(type, compiled);
  }
  if (compiled_call != Py_None) {
    return PyErr_Occurred() ? -1 : 0;
  }
  if (PyDict_GetItemWithError(dict, forward_name) != nullptr) {
    return 0;
  }
  return PyErr_Occurred() ? -1 : 1;
}

// fn(module, x): module(x) for a Swish/Mish module when only its forward would run, else None.
template <Activation act>
PyObject* module_call(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "module_call(module, x) takes 2 arguments");
    return nullptr;
  }
  const at::Tensor* x = plain_call(args[1]);
  if (x == nullptr) {
    Py_RETURN_NONE;
  }
  PyObject* dict = PyObject_GenericGetDict(args[0], nullptr);
  if (dict == nullptr) {
    return nullptr;
  }
  const int plain = only_forward_would_run(Py_TYPE(args[0]), dict);
  static PyObject* inplace_name = PyUnicode_InternFromString("inplace");
  PyObject* inplace_value = plain == 1 ? PyDict_GetItemWithError(dict, inplace_name) : nullptr;
  const int inplace = inplace_value == nullptr ? -1 : PyObject_IsTrue(inplace_value);
  Py_DECREF(dict);
  if (plain < 0 || PyErr_Occurred()) {
    return nullptr;
  }
  if (plain == 0 || inplace < 0) {
    Py_RETURN_NONE;
  }
  return activate_tensor(act, args[1], *x, inplace);
  END_HANDLE_TH_ERRORS
}

// _set_module_hook_dicts(d1, d2, d3, d4): torch.nn.modules.module's global hook dicts (mutated in
// place by register_module_*_hook, never rebound), read by module_call.
PyObject* set_module_hook_dicts(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "_set_module_hook_dicts takes the 4 global hook dicts");
    return nullptr;
  }
  for (Py_ssize_t i = 0; i < 4; ++i) {
    if (!PyDict_Check(args[i])) {
      PyErr_SetString(PyExc_TypeError, "_set_module_hook_dicts: expected dicts");
      return nullptr;
    }
  }
  for (Py_ssize_t i = 0; i < 4; ++i) {
    Py_INCREF(args[i]);
    Py_XSETREF(global_hook_dicts[i], args[i]);
  }
  Py_RETURN_NONE;
}

// _set_fast_entry(device_type: str, enabled: bool): whether calls on that device type may take
// the fast entry (functional.py enables a device type once its default backend is this extension).
PyObject* set_fast_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2 || !PyUnicode_Check(args[0])) {
    PyErr_SetString(PyExc_TypeError, "_set_fast_entry(device_type: str, enabled: bool)");
    return nullptr;
  }
  const char* device = PyUnicode_AsUTF8(args[0]);
  const int enabled = PyObject_IsTrue(args[1]);
  if (device == nullptr || enabled < 0) {
    return nullptr;
  }
  if (std::strcmp(device, "cpu") == 0) {
    fast_cpu = enabled;
  } else if (std::strcmp(device, "cuda") == 0) {
    fast_cuda = enabled;
  } else if (enabled) {
    PyErr_Format(PyExc_ValueError, "_set_fast_entry: no fast entry for device type %s", device);
    return nullptr;
  }
  Py_RETURN_NONE;
}

// _fast_entry_applies(x) -> bool: for tests, whether a call with x would take the fast entry now.
PyObject* fast_entry_applies(PyObject* /*module*/, PyObject* obj) {
  HANDLE_TH_ERRORS
  return PyBool_FromLong(plain_call(obj) != nullptr);
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"swish", forward<Activation::Swish>, METH_O, "swish(x): f(x), or None: use the checked path"},
    {"mish", forward<Activation::Mish>, METH_O, "mish(x): f(x), or None: use the checked path"},
    {"swish_activate", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(
                           activate<Activation::Swish>)),
     METH_FASTCALL, "swish_activate(x, inplace): the module form, or None"},
    {"mish_activate", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(
                          activate<Activation::Mish>)),
     METH_FASTCALL, "mish_activate(x, inplace): the module form, or None"},
    {"swish_module_call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(
                              module_call<Activation::Swish>)),
     METH_FASTCALL, "swish_module_call(module, x): module(x) when only forward would run, or None"},
    {"mish_module_call", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(
                             module_call<Activation::Mish>)),
     METH_FASTCALL, "mish_module_call(module, x): module(x) when only forward would run, or None"},
    {"_set_module_hook_dicts", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(
                                   set_module_hook_dicts)),
     METH_FASTCALL, "_set_module_hook_dicts(d1, d2, d3, d4)"},
    {"_set_fast_entry", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(set_fast_entry)),
     METH_FASTCALL, "_set_fast_entry(device_type, enabled)"},
    {"_fast_entry_applies", fast_entry_applies, METH_O, "_fast_entry_applies(x) -> bool"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace
}  // namespace swishkernels

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "swishkernels._C", nullptr, -1,
                                   swishkernels::methods};
  return PyModule_Create(&module_def);
}
