// `switchyard bench alltoall`: the dispatcher's row exchange (all_to_all_v_with_grad over the MPI
// backend: contiguous rows as one MPI datatype, output allocated per call) against a raw
// MPI_Alltoallv on preallocated byte buffers, moving the same bytes with the same uneven counts.
// Run under mpirun; a single process measures the self-copy.
#include <malloc.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <random>

#include "bench/bench.h"
#include "common/errors.h"
#include "common/table.h"
#include "parallel/all_to_all.h"

namespace switchyard {
namespace {

constexpr int64_t kRowBytes = 2048 * 4;  // one fp32 Qwen hidden state

// Uneven counts like a router's: per-peer shares drawn from a seeded generator, same on all ranks.
std::vector<int64_t> uneven_counts(int64_t rows, int peers, int me, uint64_t seed) {
  std::mt19937_64 gen(seed * 7919 + uint64_t(me));
  std::vector<double> share(peers);
  for (auto& v : share) v = 0.5 + std::uniform_real_distribution<double>(0, 1)(gen);
  double sum = 0;
  for (auto v : share) sum += v;
  std::vector<int64_t> counts(peers);
  int64_t given = 0;
  for (int p = 0; p < peers; ++p) given += counts[p] = int64_t(double(rows) * share[p] / sum);
  counts[peers - 1] += rows - given;
  return counts;
}

void run_alltoall_bench(const BenchContext& ctx) {
  // Keep freed memory for reuse, as a training loop reusing the same sizes every step would
  // see it: by default glibc maps every block above ~32 MiB fresh from the kernel and unmaps it
  // on free, so each exchange pays page faults again (bench/RESULTS.md, "Measurements behind
  // the code"). Set here, not in main: holding freed memory raises the peak of one-shot runs
  // such as `bench model`.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  auto world = make_mpi_world_communicator();
  const int n = world->size(), me = world->rank();
  const auto& b = ctx.config.bench();
  std::vector<int64_t> sizes(b.alltoall_bytes().begin(), b.alltoall_bytes().end());
  if (sizes.empty())
    for (int64_t s = 64 << 10; s <= 64 << 20; s *= 4) sizes.push_back(s);

  Table table({"bytes", "ranks", "rows", "ours_us", "mpi_us", "ours_gbps", "mpi_gbps", "ratio",
               "mpi_fresh_gbps", "ratio_fresh"});
  for (const int64_t bytes : sizes) {
    const int64_t rows = std::max<int64_t>(1, bytes / kRowBytes);
    auto send = uneven_counts(rows, n, me, b.alltoall_bytes_size() + uint64_t(bytes));
    auto recv = world->exchange_counts(send);
    int64_t recv_rows = 0;
    for (auto r : recv) recv_rows += r;
    auto input = torch::randn({rows, kRowBytes / 4});

    // Raw MPI: byte counts and displacements, buffers allocated once outside the timing.
    std::vector<int> sc(n), rc(n), sd(n), rd(n);
    for (int p = 0, so = 0, ro = 0; p < n; ++p) {
      sc[p] = int(send[p] * kRowBytes), rc[p] = int(recv[p] * kRowBytes);
      sd[p] = so, rd[p] = ro;
      so += sc[p], ro += rc[p];
    }
    auto raw_into = [&](torch::Tensor& out) {
      MPI_Alltoallv(input.data_ptr(), sc.data(), sd.data(), MPI_BYTE, out.data_ptr(), rc.data(),
                    rd.data(), MPI_BYTE, MPI_COMM_WORLD);
    };
    auto mpi_out = torch::empty({recv_rows, kRowBytes / 4});
    torch::Tensor ours_out, fresh_out;
    const auto us =
        median_max_us(world,
                      {[&] { ours_out = all_to_all_v_with_grad(world, input, send, recv); },
                       [&] { raw_into(mpi_out); },
                       [&] {
                         fresh_out = torch::empty({recv_rows, kRowBytes / 4});
                         raw_into(fresh_out);
                       }},
                      b.warmup(), b.repeats());
    const double ours_us = us[0], mpi_us = us[1], fresh_us = us[2];
    // Same bytes must have arrived, or the comparison means nothing.
    SY_CHECK(torch::equal(ours_out, mpi_out), "alltoall bench: results differ at ", bytes,
             " bytes");

    const double sent = double(rows * kRowBytes);  // algorithmic bytes per rank
    table.add({int64_t(rows * kRowBytes), n, rows, Cell(ours_us, 1), Cell(mpi_us, 1),
               Cell(sent / ours_us / 1e3, 3), Cell(sent / mpi_us / 1e3, 3),
               Cell(mpi_us / ours_us, 3), Cell(sent / fresh_us / 1e3, 3),
               Cell(fresh_us / ours_us, 3)});
  }
  if (me != 0) return;
  if (ctx.json) {
    table.print_json(ctx.out);
    return;
  }
  ctx.out << "All-to-all-v, " << n << " ranks, uneven counts, rows of " << kRowBytes
          << " bytes, median of " << b.repeats() << " runs (slowest rank per run)\n";
  table.print(ctx.out);
  ctx.out << "gbps: bytes each rank sends / time (GB/s); ratio = mpi_us / ours_us. mpi: raw "
             "MPI_Alltoallv into one buffer reused every call; mpi_fresh: into a new buffer per "
             "call, as ours must (autograd keeps its output)\n\n";
}

}  // namespace

BenchEntry alltoall_bench_entry() {
  return {"alltoall", "the dispatcher's exchange against raw MPI_Alltoallv (run under mpirun)",
          run_alltoall_bench};
}

}  // namespace switchyard
