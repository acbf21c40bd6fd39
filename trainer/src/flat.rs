//! Moving parameters between a flat `Vec<f32>` and a burn module.
//!
//! The flat order is the order in which burn's [`ModuleVisitor`] / [`ModuleMapper`] meet the
//! float parameters (declaration order of the `#[derive(Module)]` fields, depth first). The
//! layout, the writer and the reader below all use that same traversal, so they agree.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use crate::error::TrainerError;

/// Names (dot-separated module paths) and shapes of the float parameters, in flat order.
///
/// Works on a freshly configured module without initialising its (lazy) parameters.
pub(crate) fn layout<M: Module>(module: &M) -> Vec<(String, Vec<usize>)> {
    struct Layout {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>)>,
    }
    impl ModuleVisitor for Layout {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let shape = param.lazy_shape();
            self.out.push((self.path.join("."), shape.to_vec()));
        }
    }
    let mut visitor = Layout { path: Vec::new(), out: Vec::new() };
    module.visit(&mut visitor);
    visitor.out
}

/// Total number of scalars in a layout.
pub(crate) fn layout_len(layout: &[(String, Vec<usize>)]) -> usize {
    layout.iter().map(|(_, s)| s.iter().product::<usize>()).sum()
}

/// Replaces every float parameter of `module` with the next slice of `flat`.
///
/// Parameters keep their ids, device and gradient requirement (lazy initialisers are dropped
/// without running). `flat.len()` must equal the module's parameter count (checked by callers;
/// checked again here).
pub(crate) fn load<M: Module>(module: M, flat: &[f32]) -> Result<M, TrainerError> {
    struct Loader<'a> {
        flat: &'a [f32],
        offset: usize,
        overflow: bool,
    }
    impl ModuleMapper for Loader<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let shape = param.lazy_shape();
            let n = shape.num_elements();
            let Some(values) = self.flat.get(self.offset..self.offset + n) else {
                self.overflow = true;
                return param;
            };
            self.offset += n;
            let device = param.lazy_device();
            let tensor = Tensor::<D>::from_data(TensorData::new(values.to_vec(), shape), &device);
            let id = param.id;
            param.transform_for_load(tensor, id)
        }
    }
    let mut loader = Loader { flat, offset: 0, overflow: false };
    let module = module.map(&mut loader);
    if loader.overflow || loader.offset != flat.len() {
        return Err(TrainerError::ParamLength {
            what: "the module".to_string(),
            expected: loader.offset,
            got: flat.len(),
        });
    }
    Ok(module)
}

/// Reads every float parameter of `module` into one flat vector, in layout order.
#[cfg(test)]
pub(crate) fn read<M: Module>(module: &M) -> Result<Vec<f32>, TrainerError> {
    struct Reader {
        out: Vec<f32>,
        error: Option<String>,
    }
    impl ModuleVisitor for Reader {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.error.is_some() {
                return;
            }
            match param.val().try_into_vec_as::<f32>() {
                Ok(values) => self.out.extend_from_slice(&values),
                Err(e) => self.error = Some(format!("reading a parameter back: {e:?}")),
            }
        }
    }
    let mut reader = Reader { out: Vec::new(), error: None };
    module.visit(&mut reader);
    match reader.error {
        Some(e) => Err(TrainerError::Backend(e)),
        None => Ok(reader.out),
    }
}

/// The gradients of every float parameter of `module`, flat, in layout
/// order (a parameter without a gradient contributes zeros).
pub(crate) fn grads<M: Module>(module: &M, grads: &GradientsParams) -> Result<Vec<f32>, TrainerError> {
    struct Reader<'a> {
        grads: &'a GradientsParams,
        out: Vec<f32>,
        error: Option<String>,
    }
    impl ModuleVisitor for Reader<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.error.is_some() {
                return;
            }
            match self.grads.get::<D>(param.id) {
                Some(g) => match g.try_into_vec_as::<f32>() {
                    Ok(values) => self.out.extend_from_slice(&values),
                    Err(e) => self.error = Some(format!("reading a gradient: {e:?}")),
                },
                None => self.out.extend(std::iter::repeat_n(0.0, param.lazy_shape().num_elements())),
            }
        }
    }
    let mut reader = Reader { grads, out: Vec::new(), error: None };
    module.visit(&mut reader);
    match reader.error {
        Some(e) => Err(TrainerError::Backend(e)),
        None => Ok(reader.out),
    }
}
