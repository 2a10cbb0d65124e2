// Autograd of the fused layer's ops (bn_swish_layer.cpp): a hand-written autograd Node per
// activation rather than torch::autograd::Function, whose apply boxes its arguments, keeps a
// per-input info list and a context object: this layer exists to make a small layer's step cheap.
//
// The forward saves x (made dense first, as the op would), per-channel mean and 1/std, and the
// parameters by reference: the same tensors as swishkernels/bn_swish.py:BatchNormActFunction, so
// sk.saved_for_backward counts the same bytes, and saved-tensor hooks (recompute mode) see them.
// Backward calls the backward op once, asking only for the gradients the graph needs. It is
// differentiable once: with create_graph=True its results carry a node that raises if a second
// backward reaches it (Python's @once_differentiable does the same). Running statistics and the
// counter are updated in place, and their version counters bumped, as Tensor.copy_ would.
// In Python the node shows its saved tensors as `_saved_*` attributes, as ATen's nodes do
// (sk.tensors_saved_by_graph reads them).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/python_cpp_function.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "activations.h"

namespace swishkernels {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;
using Outputs5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Outputs3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using ForwardSchema = Outputs5(const at::Tensor&, const OptTensor&, const OptTensor&,
                               const OptTensor&, const OptTensor&, const OptTensor&,
                               std::optional<double>, double, bool);
using BackwardSchema = Outputs3(const at::Tensor&, const at::Tensor&, const OptTensor&,
                                const OptTensor&, const at::Tensor&, const at::Tensor&, bool,
                                std::array<bool, 3>);

template <typename Schema>
c10::TypedOperatorHandle<Schema> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Schema>();
}

template <Activation f>
struct Layer;
template <>
struct Layer<Activation::Swish> {
  static constexpr const char* forward = "swishkernels::bn_swish_layer_forward";
  static constexpr const char* backward = "swishkernels::bn_swish_layer_backward";
  static constexpr const char* node = "BatchNormSwish2dBackward";
};
template <>
struct Layer<Activation::Mish> {
  static constexpr const char* forward = "swishkernels::bn_mish_layer_forward";
  static constexpr const char* backward = "swishkernels::bn_mish_layer_backward";
  static constexpr const char* node = "BatchNormMish2dBackward";
};

template <Activation f>
const c10::TypedOperatorHandle<ForwardSchema>& forward_op() {
  static const auto op = find_op<ForwardSchema>(Layer<f>::forward);
  return op;
}

template <Activation f>
const c10::TypedOperatorHandle<BackwardSchema>& backward_op() {
  static const auto op = find_op<BackwardSchema>(Layer<f>::backward);
  return op;
}

const at::Tensor& value_or_undefined(const OptTensor& t) {
  static const at::Tensor undefined;
  return t.has_value() ? *t : undefined;
}

bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }

template <Activation f>
struct LayerBackward final : public torch::autograd::Node {
  SavedVariable x_, weight_, bias_, mean_, invstd_;
  bool batch_stats_ = true;

  std::string name() const override { return Layer<f>::node; }

  void release_variables() override {
    x_.reset_data();
    weight_.reset_data();
    bias_.reset_data();
    mean_.reset_data();
    invstd_.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    const std::array<bool, 3> mask = {task_should_compute_output(0), task_should_compute_output(1),
                                      task_should_compute_output(2)};
    const at::Tensor& grad_output = grads[0];
    if (!grad_output.defined() || !(mask[0] || mask[1] || mask[2])) {
      return {at::Tensor(), at::Tensor(), at::Tensor()};  // y's gradient undefined (zero)
    }
    // Unpacking checks for in-place changes since the forward and runs saved-tensor hooks.
    const at::Tensor x = x_.unpack(), weight = weight_.unpack(), bias = bias_.unpack();
    const at::Tensor mean = mean_.unpack(), invstd = invstd_.unpack();
    Outputs3 out;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;  // the CPU kernel, not this again
      out = backward_op<f>().call(grad_output, x, weight, bias, mean, invstd, batch_stats_, mask);
    }
    variable_list result = {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
    if (at::GradMode::is_enabled() && (requires_grad(grad_output) || requires_grad(x) ||
                                       requires_grad(weight) || requires_grad(bias))) {
      // create_graph=True: a second derivative through here raises when reached.
      auto error = c10::make_intrusive<torch::autograd::Error>(
          std::string("swishkernels: ") + Layer<f>::node +
              " is differentiable once; for higher derivatives use nn.BatchNorm2d followed by the "
              "activation (sk.unfuse_bn_swish)",
          torch::autograd::collect_next_edges(grad_output, x, weight, bias));
      for (at::Tensor& t : result) {
        if (t.defined()) {
          torch::autograd::create_gradient_edge(t, error);
        }
      }
    }
    return result;
  }
};

void check_no_forward_ad(const char* op, const at::Tensor& t) {
  TORCH_CHECK(!t.defined() || !t._fw_grad(/*level=*/0).defined(), op,
              ": forward-mode AD is not supported by this op (BatchNormSwish2d and BatchNormMish2d "
              "take PyTorch's ops under forward-mode AD)");
}

template <Activation f>
Outputs5 forward_autograd(const at::Tensor& x_in, const OptTensor& weight_opt,
                          const OptTensor& bias_opt, const OptTensor& running_mean,
                          const OptTensor& running_var, const OptTensor& counter,
                          std::optional<double> momentum, double eps, bool batch_stats) {
  const at::Tensor& weight = value_or_undefined(weight_opt);
  const at::Tensor& bias = value_or_undefined(bias_opt);
  check_no_forward_ad(Layer<f>::forward, x_in);
  check_no_forward_ad(Layer<f>::forward, weight);
  check_no_forward_ad(Layer<f>::forward, bias);
  const bool needs_graph = at::GradMode::is_enabled() &&
                           (requires_grad(x_in) || requires_grad(weight) || requires_grad(bias));
  // The dense copy (if any) is made here, above the op, so that the graph records it and it is
  // the tensor saved.
  const at::Tensor x = x_in.is_non_overlapping_and_dense() ? x_in : x_in.contiguous();
  Outputs5 out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = forward_op<f>().call(x, weight_opt, bias_opt, running_mean, running_var, counter,
                               momentum, eps, batch_stats);
  }
  if (batch_stats) {
    for (const OptTensor* t : {&running_mean, &running_var, &counter}) {
      if (t->has_value() && (*t)->defined()) {
        torch::autograd::impl::bump_version(**t);
      }
    }
  }
  if (needs_graph) {
    auto node = c10::make_intrusive<LayerBackward<f>>();
    node->set_next_edges(torch::autograd::collect_next_edges(x, weight, bias));
    node->x_ = SavedVariable(x, false);
    node->weight_ = SavedVariable(weight, false);
    node->bias_ = SavedVariable(bias, false);
    node->mean_ = SavedVariable(std::get<1>(out), false);
    node->invstd_ = SavedVariable(std::get<2>(out), false);
    node->batch_stats_ = batch_stats;
    torch::autograd::set_history(std::get<0>(out), node);
    torch::autograd::fire_node_creation_hooks(node);
  }
  return out;
}

// grad_fn._saved_x etc. in Python, as ATen's generated nodes expose theirs.
template <Activation f, SavedVariable LayerBackward<f>::*member>
PyObject* saved_getter(PyObject* self, void* /*unused*/) {
  HANDLE_TH_ERRORS
  const auto& node = reinterpret_cast<torch::autograd::THPCppFunction*>(self)->cdata;
  return THPVariable_Wrap((static_cast<LayerBackward<f>*>(node.get())->*member).unpack(node));
  END_HANDLE_TH_ERRORS
}

template <Activation f>
void register_python_type() {
  using torch::autograd::THPCppFunction_metadata;
  using torch::autograd::THPCppFunction_next_functions;
  using torch::autograd::THPCppFunction_requires_grad;
  using torch::autograd::THPCppFunction_input_metadata;
  using Node = LayerBackward<f>;
  static PyGetSetDef properties[] = {
      THP_FUNCTION_DEFAULT_PROPERTIES,
      {(char*)"_saved_x", saved_getter<f, &Node::x_>, nullptr, nullptr, nullptr},
      {(char*)"_saved_weight", saved_getter<f, &Node::weight_>, nullptr, nullptr, nullptr},
      {(char*)"_saved_bias", saved_getter<f, &Node::bias_>, nullptr, nullptr, nullptr},
      {(char*)"_saved_mean", saved_getter<f, &Node::mean_>, nullptr, nullptr, nullptr},
      {(char*)"_saved_invstd", saved_getter<f, &Node::invstd_>, nullptr, nullptr, nullptr},
      {nullptr, nullptr, nullptr, nullptr, nullptr}};
  static PyTypeObject type;
  torch::autograd::_initFunctionPyTypeObject(type, Layer<f>::node, properties, nullptr);
  Py_INCREF(&type);
  torch::autograd::registerCppFunction(typeid(Node), &type);
}

// At load time: Python imports swishkernels._C, so the interpreter is up and the GIL held.
const bool python_types_registered = [] {
  register_python_type<Activation::Swish>();
  register_python_type<Activation::Mish>();
  return true;
}();

}  // namespace

// The Autograd alias key covers every device's autograd key.
TORCH_LIBRARY_IMPL(swishkernels, Autograd, m) {
  m.impl("bn_swish_layer_forward", &forward_autograd<Activation::Swish>);
  m.impl("bn_mish_layer_forward", &forward_autograd<Activation::Mish>);
}

}  // namespace swishkernels
