//! NCCL at world size 1 on GPU 0 (NCCL refuses two ranks on one GPU; several
//! ranks are tested on the CPU ring). Runs with `PREMEM_TEST_DEVICE=cuda` on
//! a GPU host whose `LD_LIBRARY_PATH` starts with a directory holding
//! `libnccl.so -> <torch's libnccl.so.2>`; elsewhere each test says it is
//! skipped and passes.
#![cfg(feature = "nccl")]

use std::sync::Mutex;

use premem_trainer::Collective;
use premem_trainer::nccl::{
    MIN_NCCL_VERSION, NcclCollective, UNIQUE_ID_BYTES, nccl_version, unique_id,
};
use tch::{Device, Kind, Tensor};

/// One communicator at a time on the GPU (tests run on parallel threads).
static GPU: Mutex<()> = Mutex::new(());

/// GPU 0 when `PREMEM_TEST_DEVICE=cuda`, else `None` (skip).
fn cuda_device(test: &str) -> Option<Device> {
    premem_model::runtime::init();
    match std::env::var("PREMEM_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            assert!(
                tch::Cuda::is_available(),
                "PREMEM_TEST_DEVICE=cuda but CUDA is not available"
            );
            Some(Device::Cuda(0))
        }
        _ => {
            println!("{test}: skipped (set PREMEM_TEST_DEVICE=cuda on a GPU host)");
            None
        }
    }
}

fn world_of_one(device: Device) -> NcclCollective {
    let id = unique_id().expect("unique id");
    assert_eq!(id.len(), UNIQUE_ID_BYTES);
    NcclCollective::new(0, 1, &id, device).expect("ncclCommInitRank")
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    let flat = t.to_device(Device::Cpu).to_kind(Kind::Double).reshape([-1]);
    Vec::<f64>::try_from(&flat).unwrap()
}

#[test]
fn nccl_is_recent_enough() {
    let Some(_) = cuda_device("nccl_is_recent_enough") else {
        return;
    };
    let version = nccl_version().expect("nccl version");
    assert!(version >= MIN_NCCL_VERSION, "{version:?}");
    println!("nccl {version:?}");
}

#[test]
fn collectives_at_world_size_one() {
    let Some(device) = cuda_device("collectives_at_world_size_one") else {
        return;
    };
    let _gpu = GPU.lock().unwrap_or_else(|p| p.into_inner());
    let mut comm = world_of_one(device);
    assert_eq!((comm.rank(), comm.world_size()), (0, 1));
    assert_eq!(comm.device(), device);

    // The optimizer's flat fp32 gradient buffer and the loss, as step.rs
    // passes them; the result must be visible to the next libtorch kernel.
    for kind in [Kind::Float, Kind::BFloat16, Kind::Double, Kind::Int64] {
        let expected = Tensor::arange(1000, (kind, device)) - 17;
        let mut t = expected.copy();
        comm.all_reduce_sum(&mut t).expect("all_reduce_sum");
        assert_eq!(to_vec(&t), to_vec(&expected), "{kind:?}");
        let doubled = &t * 2;
        assert_eq!(to_vec(&doubled), to_vec(&(&expected * 2)), "{kind:?}");
    }
    let mut loss = Tensor::from_slice(&[3.5f32]).to_device(device);
    comm.all_reduce_sum(&mut loss).expect("all_reduce_sum loss");
    assert_eq!(loss.double_value(&[0]), 3.5);

    // Views with a storage offset: data_ptr points at their first element.
    let base = Tensor::arange(10, (Kind::Float, device));
    let mut tail = base.narrow(0, 4, 6);
    comm.all_reduce_sum(&mut tail).expect("all_reduce_sum view");
    assert_eq!(to_vec(&base), (0..10).map(f64::from).collect::<Vec<_>>());
    let mut out = Tensor::zeros([6], (Kind::Float, device));
    comm.all_gather(&tail, &mut out)
        .expect("all_gather from a view");
    assert_eq!(to_vec(&out), (4..10).map(f64::from).collect::<Vec<_>>());
    let into = Tensor::zeros([10], (Kind::Float, device));
    let mut window = into.narrow(0, 2, 6);
    comm.reduce_scatter_sum(&tail, &mut window)
        .expect("reduce_scatter_sum into a view");
    let mut want = vec![0.0; 10];
    want[2..8].copy_from_slice(&[4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    assert_eq!(to_vec(&into), want);

    let expected = Tensor::arange(24, (Kind::Float, device)).reshape([4, 6]);
    let mut t = expected.copy();
    comm.broadcast(&mut t, 0).expect("broadcast");
    assert_eq!(to_vec(&t), to_vec(&expected));
    let mut flags = Tensor::from_slice(&[true, false, true]).to_device(device);
    comm.broadcast(&mut flags, 0).expect("broadcast bool");

    let input = Tensor::arange(12, (Kind::Float, device)) * 0.5;
    let mut output = Tensor::zeros([12], (Kind::Float, device));
    comm.reduce_scatter_sum(&input, &mut output)
        .expect("reduce_scatter_sum");
    assert_eq!(to_vec(&output), to_vec(&input));
    let mut gathered = Tensor::zeros([12], (Kind::Float, device));
    comm.all_gather(&input, &mut gathered).expect("all_gather");
    assert_eq!(to_vec(&gathered), to_vec(&input));

    // Refused with an error naming the operation, and the communicator stays
    // usable afterwards.
    let mut cpu = Tensor::zeros([3], (Kind::Float, Device::Cpu));
    let err = comm.all_reduce_sum(&mut cpu).unwrap_err().to_string();
    assert!(
        err.contains("all_reduce_sum") && err.contains("Cpu"),
        "{err}"
    );
    let mut strided = Tensor::zeros([3, 4], (Kind::Float, device)).transpose(0, 1);
    let err = comm.all_reduce_sum(&mut strided).unwrap_err().to_string();
    assert!(err.contains("not contiguous"), "{err}");
    let mut t = Tensor::zeros([3], (Kind::Float, device));
    let err = comm.broadcast(&mut t, 1).unwrap_err().to_string();
    assert!(err.contains("root 1"), "{err}");
    let mut bools = Tensor::from_slice(&[true]).to_device(device);
    let err = comm.all_reduce_sum(&mut bools).unwrap_err().to_string();
    assert!(err.contains("Bool"), "{err}");
    let mut short = Tensor::zeros([5], (Kind::Float, device));
    let err = comm
        .reduce_scatter_sum(&input, &mut short)
        .unwrap_err()
        .to_string();
    assert!(err.contains("reduce_scatter_sum"), "{err}");
    let mut t = Tensor::ones([4], (Kind::Float, device));
    comm.all_reduce_sum(&mut t).expect("usable after refusals");
    assert_eq!(to_vec(&t), vec![1.0; 4]);
}

#[test]
fn aborted_communicator_refuses_work_and_regroups() {
    let Some(device) = cuda_device("aborted_communicator_refuses_work_and_regroups") else {
        return;
    };
    let _gpu = GPU.lock().unwrap_or_else(|p| p.into_inner());
    let mut comm = world_of_one(device);
    let aborter = comm.aborter();
    std::thread::spawn(move || aborter.abort())
        .join()
        .unwrap()
        .expect("abort from another thread");
    let mut t = Tensor::ones([4], (Kind::Float, device));
    let err = comm.all_reduce_sum(&mut t).unwrap_err().to_string();
    assert!(err.contains("aborted"), "{err}");
    comm.abort().expect("second abort is a no-op");
    let late = comm.aborter();
    drop(comm);
    late.abort().expect("abort after drop is a no-op");

    // Regroup: a new id and a new communicator on the same device.
    let mut comm = world_of_one(device);
    comm.all_reduce_sum(&mut t)
        .expect("all_reduce_sum after regroup");
    assert_eq!(to_vec(&t), vec![1.0; 4]);
}
