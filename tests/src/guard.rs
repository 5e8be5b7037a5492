//! Keeps the kernel's per-CPU BPF guard (`bpf_prog_active`) raised on one
//! CPU most of the time, so that the transitions that CPU's softirqs handle
//! meanwhile make the kernel skip tcpstate's classic tracepoint programs, as
//! a nested run would.
//!
//! How: a thread pinned to the CPU looks up a 4 MiB BPF array element in a
//! loop. `BPF_MAP_LOOKUP_ELEM` copies the value with the guard raised
//! (`bpf_disable_instrumentation()`), so the guard is up for almost all of
//! the thread's time.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};

use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const VALUE_SIZE: usize = 4 << 20;

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).expect("CPU index");
    sched_setaffinity(Pid::from_raw(0), &set).expect("sched_setaffinity");
}

/// The guard holder; stops when dropped.
pub struct GuardHolder {
    stop: Arc<AtomicBool>,
    lookups: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl GuardHolder {
    /// Starts holding the guard on `cpu`.
    pub fn start(cpu: usize) -> GuardHolder {
        let map = create_array()
            .expect("creating a BPF array map (needs CAP_BPF; before Linux 5.11, RLIMIT_MEMLOCK)");
        let (stop, lookups) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let thread = {
            let (stop, lookups) = (Arc::clone(&stop), Arc::clone(&lookups));
            thread::spawn(move || {
                pin_to(cpu);
                let mut value = vec![0u8; VALUE_SIZE];
                let key = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    lookup(&map, &key, &mut value).expect("BPF_MAP_LOOKUP_ELEM");
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        GuardHolder {
            stop,
            lookups,
            thread: Some(thread),
        }
    }

    /// Lookups done so far.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
}

impl Drop for GuardHolder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `union bpf_attr`, zero-padded to the size the kernel accepts.
#[repr(C, align(8))]
struct Attr([u8; 128]);

fn bpf(cmd: libc::c_long, attr: &Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr of the size given.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const Attr, size_of::<Attr>()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

fn create_array() -> io::Result<OwnedFd> {
    // Before 5.11 BPF maps are charged to RLIMIT_MEMLOCK, whose default is
    // far below the array's 4 MiB. Where raising it is not allowed (no
    // CAP_SYS_RESOURCE), the kernel is newer or the map creation below
    // says so.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain system call on a value that lives through it.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    let mut attr = Attr([0; 128]);
    // map_type, key_size, value_size, max_entries
    for (i, v) in [BPF_MAP_TYPE_ARRAY, 4, VALUE_SIZE as u32, 1]
        .iter()
        .enumerate()
    {
        attr.0[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    let fd = bpf(BPF_MAP_CREATE, &attr)?;
    // SAFETY: the kernel just returned this new descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn lookup(map: &OwnedFd, key: &u32, value: &mut [u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let mut attr = Attr([0; 128]);
    // map_fd (u32), pad, key (u64 pointer), value (u64 pointer)
    attr.0[0..4].copy_from_slice(&(map.as_raw_fd() as u32).to_ne_bytes());
    attr.0[8..16].copy_from_slice(&(key as *const u32 as u64).to_ne_bytes());
    attr.0[16..24].copy_from_slice(&(value.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_MAP_LOOKUP_ELEM, &attr).map(drop)
}
