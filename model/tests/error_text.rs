//! A real libtorch error through [`premem_core::error_text::concise`]: the
//! message stays, the C++ stack goes.

use premem_core::error_text::concise;
use tch::{Device, Kind, Tensor};

#[test]
fn a_libtorch_error_keeps_its_message_and_loses_its_cpp_stack() {
    let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    let err = a.f_mm(&a).unwrap_err().to_string();
    // libtorch puts the C++ stack of the raise into the message.
    assert!(err.contains("frame #"), "{err}");
    let short = concise(&err);
    assert!(short.contains("cannot be multiplied"), "{short}");
    assert!(
        !short.contains("frame #") && !short.contains("Exception raised from"),
        "{short}"
    );
    assert!(
        short.len() < 300,
        "{} bytes from {}: {short}",
        short.len(),
        err.len()
    );
}
