# Targets: switchyard_config (protobuf schema), switchyard_cuda (kernels, torch-free),
# switchyard_core (the library) and the `switchyard` executable.

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
  add_library(switchyard_cuda STATIC routers/fwht_cuda.cu)
  target_include_directories(switchyard_cuda PRIVATE ${CMAKE_SOURCE_DIR})
  set_target_properties(switchyard_cuda PROPERTIES POSITION_INDEPENDENT_CODE ON
                                                   CUDA_SEPARABLE_COMPILATION OFF)
  target_link_libraries(switchyard_cuda PUBLIC CUDA::cudart)
endif()

# ---- build facts for `switchyard info` ----------------------------------------------------------
configure_file(${CMAKE_SOURCE_DIR}/launch/build_info.h.in ${SWITCHYARD_GEN_DIR}/launch/build_info.h @ONLY)

# ---- the library ---------------------------------------------------------------------------------
add_library(switchyard_core STATIC
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
  routers/routing_stats.cpp
  parallel/communicator.cpp
  parallel/single_process_communicator.cpp
  parallel/mpi_communicator.cpp
  parallel/process_groups.cpp
  parallel/all_to_all.cpp
  parallel/all_to_all_dispatcher.cpp
  parallel/gradient_sync.cpp
  parallel/staging_communicator.cpp
  models/cpu_linear.cpp
  models/expert_bank.cpp
  models/lm_loss.cpp
  models/weight_quant.cpp
  models/moe_block.cpp
  models/safetensors_header.cpp
  models/safetensors.cpp
  models/qwen2_moe_config.cpp
  models/qwen2_moe.cpp
  models/qwen2_moe_checkpoint.cpp
  models/gptq.cpp
  models/checkpoint_summary.cpp
  models/bert_config.cpp
  models/bert_moe.cpp
  models/bert_moe_hf.cpp
  models/task_model.cpp
  trainer/token_lines.cpp
  trainer/adamw.cpp
  trainer/lr_schedule.cpp
  trainer/trainer.cpp
  trainer/metrics_log.cpp
  trainer/checkpoint.cpp
  trainer/utf8.cpp
  trainer/unicode_class.cpp
  trainer/byte_level_pre_tokenizer.cpp
  trainer/bpe_tokenizer.cpp
  trainer/corpus_split.cpp
  trainer/fortune_corpus.cpp
  trainer/text_corpus.cpp
  trainer/token_documents.cpp
  trainer/token_file.cpp
  trainer/epoch_shuffle.cpp
  trainer/batch_sampler.cpp
  trainer/packed_sequences.cpp
  trainer/classification_dataset.cpp
  trainer/corpus_prepare.cpp
  trainer/weight_init.cpp
  common/table.cpp
  common/autocast.cpp
  bench/bench_registry.cpp
  bench/router_bench.cpp
  bench/fwht_bench.cpp
  bench/layer_bench.cpp
  bench/alltoall_bench.cpp
  bench/model_bench.cpp
  bench/quant_bench.cpp
  models/switchyard_checkpoint.cpp
  models/model_checkpoint.cpp
  eval/eval_set.cpp
  eval/eval_report.cpp
  eval/model_eval.cpp
  eval/svg_chart.cpp
  eval/comparison_report.cpp)
target_include_directories(switchyard_core PUBLIC ${CMAKE_SOURCE_DIR} ${SWITCHYARD_GEN_DIR})
target_link_libraries(switchyard_core PUBLIC switchyard_config ${TORCH_LIBRARIES} MPI::MPI_CXX
                                             Boost::program_options Threads::Threads
                                             nlohmann_json::nlohmann_json)
# One precompiled torch header for every torch-heavy unit: the biggest single build-time win.
target_precompile_headers(switchyard_core PRIVATE <torch/torch.h>)
if(SWITCHYARD_CUDA)
  target_compile_definitions(switchyard_core PUBLIC SWITCHYARD_WITH_CUDA=1)
  target_include_directories(switchyard_core PUBLIC ${NCCL_INCLUDE_DIR})
  target_sources(switchyard_core PRIVATE parallel/nccl_communicator.cpp)
  target_link_libraries(switchyard_core PUBLIC switchyard_cuda ${NCCL_LIBRARY})
  if(SWITCHYARD_CUDART_DIR)
    target_link_options(switchyard_core INTERFACE "-Wl,-rpath,${SWITCHYARD_CUDART_DIR}")
  endif()
endif()

# Operations: launch environment, TensorBoard events (appended here to keep the list above calm).
target_sources(switchyard_core PRIVATE common/crc32c.cpp trainer/tensorboard_writer.cpp
                                       launch/launch_env.cpp launch/compute_device.cpp)

# ---- the executable ------------------------------------------------------------------------------
add_executable(switchyard
  launch/main.cpp
  launch/cli.cpp
  launch/cmd_info.cpp
  launch/cmd_bench.cpp
  launch/cmd_eval.cpp
  launch/cmd_inspect.cpp
  launch/cmd_convert.cpp
  launch/cmd_data.cpp
  launch/cmd_train.cpp
  launch/train_progress.cpp
  launch/train_model.cpp
  launch/train_data.cpp
  launch/hf_model.cpp
  launch/model_architecture.cpp
  launch/arch_qwen2_moe.cpp
  launch/arch_bert_moe.cpp
  launch/cmd_report.cpp)
target_link_libraries(switchyard PRIVATE switchyard_core)
# `switchyard data` defaults to the committed trainer/tokenizer.json of this source tree.
target_compile_definitions(switchyard PRIVATE SWITCHYARD_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
target_precompile_headers(switchyard REUSE_FROM switchyard_core)
