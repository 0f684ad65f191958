# Targets: switchyard_config (protobuf schema), switchyard_cuda (kernels, torch-free),
# switchyard_core (the library: every folder but launch/ and bench/) and the `switchyard`
# executable (launch/ and bench/).

# ---- protobuf schema ---------------------------------------------------------------------------
set(SWITCHYARD_GEN_DIR ${CMAKE_BINARY_DIR}/gen)
file(MAKE_DIRECTORY ${SWITCHYARD_GEN_DIR}/configs)
add_custom_command(
  OUTPUT ${SWITCHYARD_GEN_DIR}/configs/switchyard.pb.cc ${SWITCHYARD_GEN_DIR}/configs/switchyard.pb.h
  COMMAND protobuf::protoc --cpp_out=${SWITCHYARD_GEN_DIR} -I${CMAKE_SOURCE_DIR}
          ${CMAKE_SOURCE_DIR}/configs/switchyard.proto
  DEPENDS ${CMAKE_SOURCE_DIR}/configs/switchyard.proto protobuf::protoc
  COMMENT "protoc configs/switchyard.proto")
add_library(switchyard_config STATIC
  ${SWITCHYARD_GEN_DIR}/configs/switchyard.pb.cc
  configs/run_config.cpp
  configs/validate.cpp)
target_include_directories(switchyard_config PUBLIC ${CMAKE_SOURCE_DIR} ${SWITCHYARD_GEN_DIR})
# LibTorch wheels ship a protobuf of their own under torch/include, searched before the system's.
# Where its version differs from the protoc that generated our code (torch 2.11 carries an older
# one), the generated headers must see their own protobuf first: a private -I dir linking to it.
file(STRINGS ${Protobuf_INCLUDE_DIR}/google/protobuf/stubs/common.h _pb_ours
     REGEX "define GOOGLE_PROTOBUF_VERSION ")
foreach(_dir ${TORCH_INCLUDE_DIRS})
  if(EXISTS ${_dir}/google/protobuf/stubs/common.h)
    file(STRINGS ${_dir}/google/protobuf/stubs/common.h _pb_torch
         REGEX "define GOOGLE_PROTOBUF_VERSION ")
    if(NOT _pb_torch STREQUAL _pb_ours)
      message(STATUS "LibTorch bundles another protobuf (${_pb_torch}): ours goes first")
      file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/protobuf_include/google)
      file(CREATE_LINK ${Protobuf_INCLUDE_DIR}/google/protobuf
           ${CMAKE_BINARY_DIR}/protobuf_include/google/protobuf SYMBOLIC)
      target_include_directories(switchyard_config BEFORE PUBLIC ${CMAKE_BINARY_DIR}/protobuf_include)
    endif()
  endif()
endforeach()
target_link_libraries(switchyard_config PUBLIC protobuf::libprotobuf)
set_target_properties(switchyard_config PROPERTIES POSITION_INDEPENDENT_CODE ON)
# TensorBoard's event schema (the part we write), compiled next to the run schema.
add_custom_command(
  OUTPUT ${SWITCHYARD_GEN_DIR}/configs/tensorboard_event.pb.cc
         ${SWITCHYARD_GEN_DIR}/configs/tensorboard_event.pb.h
  COMMAND protobuf::protoc --cpp_out=${SWITCHYARD_GEN_DIR} -I${CMAKE_SOURCE_DIR}
          ${CMAKE_SOURCE_DIR}/configs/tensorboard_event.proto
  DEPENDS ${CMAKE_SOURCE_DIR}/configs/tensorboard_event.proto protobuf::protoc
  COMMENT "protoc configs/tensorboard_event.proto")
target_sources(switchyard_config PRIVATE ${SWITCHYARD_GEN_DIR}/configs/tensorboard_event.pb.cc)

# ---- CUDA kernels (no torch headers: nvcc stays fast) ------------------------------------------
if(SWITCHYARD_CUDA)
  add_library(switchyard_cuda STATIC routers/fwht_cuda.cu models/dequant_cuda.cu)
  target_include_directories(switchyard_cuda PRIVATE ${CMAKE_SOURCE_DIR})
  set_target_properties(switchyard_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON
                                                   CUDA_SEPARABLE_COMPILATION OFF)
  target_link_libraries(switchyard_cuda PUBLIC CUDA::cudart)
endif()

# ---- build facts for `switchyard info` and checkpoint manifests ----------------------------------
configure_file(${CMAKE_SOURCE_DIR}/common/build_info.h.in ${SWITCHYARD_GEN_DIR}/common/build_info.h @ONLY)

# ---- the library: each folder's sources, bottom floor first (README "Folders") -----------------
set(SWITCHYARD_COMMON_SOURCES
  common/autocast.cpp
  common/crc32c.cpp
  common/host_reads.cpp
  common/kernel_profile.cpp
  common/phase_clock.cpp
  common/table.cpp)
set(SWITCHYARD_ROUTERS_SOURCES
  routers/gating.cpp
  routers/router.cpp
  routers/router_registry.cpp
  routers/linear_router.cpp
  routers/attention_router.cpp
  routers/mlp_router.cpp
  routers/hybrid_router.cpp
  routers/hash_router.cpp
  routers/mlp_hadamard_router.cpp
  routers/fwht.cpp
  routers/routing_stats.cpp)
set(SWITCHYARD_PARALLEL_SOURCES
  parallel/communicator.cpp
  parallel/single_process_communicator.cpp
  parallel/mpi_communicator.cpp
  parallel/staging_communicator.cpp
  parallel/collective_watchdog.cpp
  parallel/watched_communicator.cpp
  parallel/launch_env.cpp
  parallel/compute_device.cpp
  parallel/process_groups.cpp
  parallel/all_to_all.cpp
  parallel/all_to_all_dispatcher.cpp
  parallel/token_rows.cpp
  parallel/gradient_sync.cpp
  parallel/placement.cpp
  parallel/expert_migration.cpp)
set(SWITCHYARD_PARALLEL_CUDA_SOURCES parallel/nccl_communicator.cpp)
set(SWITCHYARD_MODELS_SOURCES
  models/cpu_linear.cpp
  models/expert_bank.cpp
  models/lm_loss.cpp
  models/weight_quant.cpp
  models/quantized_cpu_gemm.cpp
  models/moe_block.cpp
  models/safetensors_header.cpp
  models/safetensors.cpp
  models/gptq.cpp
  models/qwen2_moe_config.cpp
  models/qwen2_moe.cpp
  models/layer_recompute.cpp
  models/qwen2_moe_checkpoint.cpp
  models/bert_config.cpp
  models/bert_moe.cpp
  models/bert_moe_hf.cpp
  models/task_model.cpp
  models/checkpoint_summary.cpp
  models/switchyard_checkpoint.cpp
  models/model_checkpoint.cpp
  models/model_architecture.cpp
  models/qwen2_moe_architecture.cpp
  models/bert_moe_architecture.cpp
  models/load_model.cpp)
set(SWITCHYARD_DATA_SOURCES
  data/utf8.cpp
  data/unicode_class.cpp
  data/byte_level_pre_tokenizer.cpp
  data/bpe_tokenizer.cpp
  data/corpus_split.cpp
  data/fortune_corpus.cpp
  data/text_corpus.cpp
  data/corpus_prepare.cpp
  data/token_documents.cpp
  data/token_file.cpp
  data/token_lines.cpp
  data/epoch_shuffle.cpp
  data/batch_sampler.cpp
  data/packed_sequences.cpp
  data/classification_dataset.cpp
  data/data_options.cpp)
set(SWITCHYARD_EVAL_SOURCES
  eval/eval_set.cpp
  eval/model_eval.cpp
  eval/eval_report.cpp
  eval/svg_chart.cpp
  eval/comparison_report.cpp)
set(SWITCHYARD_TRAINER_SOURCES
  trainer/adamw.cpp
  trainer/lr_schedule.cpp
  trainer/weight_init.cpp
  trainer/gradient_checks.cpp
  trainer/trainer.cpp
  trainer/checkpoint.cpp
  trainer/resume_fingerprint.cpp
  trainer/metrics_log.cpp
  trainer/live_placement.cpp
  trainer/expert_load_history.cpp
  trainer/tensorboard_writer.cpp
  trainer/train_progress.cpp
  trainer/training_data.cpp
  trainer/causal_lm_data.cpp
  trainer/classification_data.cpp
  trainer/training_model.cpp
  trainer/training_run.cpp)
set(SWITCHYARD_PLAN_SOURCES
  plan/cluster_spec.cpp
  plan/cost_model.cpp
  plan/cluster_plan.cpp)
set(SWITCHYARD_BENCH_SOURCES
  bench/bench_registry.cpp
  bench/router_bench.cpp
  bench/fwht_bench.cpp
  bench/layer_bench.cpp
  bench/alltoall_bench.cpp
  bench/model_bench.cpp
  bench/quant_bench.cpp
  bench/rates_bench.cpp
  bench/linear_bench.cpp
  bench/head_bench.cpp)
set(SWITCHYARD_LAUNCH_SOURCES
  launch/main.cpp
  launch/cli.cpp
  launch/cmd_info.cpp
  launch/cmd_bench.cpp
  launch/cmd_data.cpp
  launch/cmd_inspect.cpp
  launch/cmd_convert.cpp
  launch/cmd_eval.cpp
  launch/cmd_train.cpp
  launch/cmd_report.cpp
  launch/cmd_placement.cpp
  launch/cmd_plan.cpp)

add_library(switchyard_core STATIC
  ${SWITCHYARD_COMMON_SOURCES} ${SWITCHYARD_ROUTERS_SOURCES} ${SWITCHYARD_PARALLEL_SOURCES}
  ${SWITCHYARD_MODELS_SOURCES} ${SWITCHYARD_DATA_SOURCES} ${SWITCHYARD_EVAL_SOURCES}
  ${SWITCHYARD_TRAINER_SOURCES} ${SWITCHYARD_PLAN_SOURCES})
target_include_directories(switchyard_core PUBLIC ${CMAKE_SOURCE_DIR} ${SWITCHYARD_GEN_DIR})
target_link_libraries(switchyard_core PUBLIC switchyard_config ${TORCH_LIBRARIES} MPI::MPI_CXX
                                             Boost::program_options Threads::Threads
                                             nlohmann_json::nlohmann_json)
# The bundled tokenizer (data/tokenizer.json) is found in this source tree. PUBLIC: every target
# that reuses the precompiled header must define the same macros.
target_compile_definitions(switchyard_core PUBLIC SWITCHYARD_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
# One precompiled torch header for every torch-heavy unit: the biggest single build-time win.
target_precompile_headers(switchyard_core PRIVATE <torch/torch.h>)
if(SWITCHYARD_CUDA)
  target_compile_definitions(switchyard_core PUBLIC SWITCHYARD_WITH_CUDA=1)
  target_include_directories(switchyard_core PUBLIC ${NCCL_INCLUDE_DIR})
  target_sources(switchyard_core PRIVATE ${SWITCHYARD_PARALLEL_CUDA_SOURCES})
  target_link_libraries(switchyard_core PUBLIC switchyard_cuda ${NCCL_LIBRARY})
  if(SWITCHYARD_CUDART_DIR)
    target_link_options(switchyard_core INTERFACE "-Wl,-rpath,${SWITCHYARD_CUDART_DIR}")
  endif()
endif()

# ---- the executable: main, the subcommands and the benchmarks ------------------------------------
# The benchmarks live here, not in the library: they set process-wide allocator options
# (mallopt) that no library user should inherit.
add_executable(switchyard ${SWITCHYARD_LAUNCH_SOURCES} ${SWITCHYARD_BENCH_SOURCES})
target_link_libraries(switchyard PRIVATE switchyard_core)
target_precompile_headers(switchyard REUSE_FROM switchyard_core)
