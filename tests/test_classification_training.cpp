// Sequence classification with BERT-MoE through the task-neutral pieces: accuracy and macro-F1
// against hand-computed values (scikit-learn's definition), the trainer learning a labelling
// and leaving every non-router parameter bitwise unchanged in router fine-tuning, and eval's
// accuracy equal to the model's own arg-max.
#include <gtest/gtest.h>

#include "common/errors.h"
#include "eval/model_eval.h"
#include "models/bert_moe.h"
#include "models/task_model.h"
#include "trainer/trainer.h"
#include "trainer/weight_init.h"

using namespace switchyard;

namespace {

TEST(ClassificationScores, AccuracyAndMacroF1LikeScikitLearn) {
  // Rows: true label, columns: predicted. Label 2 is predicted once but never true (F1 0, still
  // averaged); label 3 neither occurs nor is predicted (left out of the average).
  auto confusion = torch::tensor({3, 1, 0, 0,  //
                                  1, 2, 1, 0,  //
                                  0, 0, 0, 0,  //
                                  0, 0, 0, 0},
                                 torch::kLong)
                       .view({4, 4});
  const ClassificationScores s = classification_scores(confusion);
  EXPECT_DOUBLE_EQ(s.accuracy, 5.0 / 8.0);
  // F1 = 2TP / (support + predicted): label 0: 6/8, label 1: 4/7, label 2: 0/1.
  EXPECT_NEAR(s.macro_f1, (0.75 + 4.0 / 7.0 + 0.0) / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(classification_scores(torch::zeros({2, 2}, torch::kLong)).accuracy, 0.0);
}

BertMoeForSequenceClassification tiny_classifier(config::RouterConfig router = {}) {
  torch::manual_seed(4);
  auto options = BertMoeOptions(BertConfig::preset("tiny"), single_process_groups())
                     .num_experts(4)
                     .router(router)
                     .top_k(2)
                     .seed(4);
  BertMoeForSequenceClassification model(options);
  init_for_pretraining(TaskModel::sequence_classification(model), single_process_groups(), 0.05, 4);
  return model;
}

// Label k's rows draw their ids from [10 + 30k, 40 + 30k): learnable from any position.
TaskBatch labelled_rows(int64_t rows, int64_t seed) {
  torch::manual_seed(seed);
  auto labels = torch::randint(0, 3, {rows}, torch::kLong);
  auto ids = torch::randint(0, 30, {rows, 12}, torch::kLong) + 10 + 30 * labels.unsqueeze(1);
  auto mask = torch::ones_like(ids);
  mask[0].narrow(0, 8, 4).zero_();  // one padded row
  return {ids, mask, labels};
}

TEST(ClassificationTraining, LearnsALabellingAndReportsAccuracy) {
  auto model = tiny_classifier();
  const TaskModel task = TaskModel::sequence_classification(model);
  ASSERT_EQ(task.moe_blocks().size(), 2u);
  EXPECT_EQ(task.num_labels(), 3);
  config::TrainConfig t;
  t.set_routers_only(false);
  t.set_learning_rate(3e-3);
  t.set_steps(40);
  Trainer trainer(task, single_process_groups(), t);
  const TaskBatch batch = labelled_rows(24, 1);
  const StepMetrics first = trainer.step({batch});
  StepMetrics last;
  for (int i = 1; i < 40; ++i) last = trainer.step({batch});
  EXPECT_LT(last.task_loss, 0.3 * first.task_loss) << first.task_loss << " -> " << last.task_loss;
  EXPECT_GT(last.accuracy, 0.95);
  EXPECT_EQ(last.tokens, batch.attention_mask.sum().item<int64_t>());

  // Evaluation on fresh rows: the reported accuracy is the model's own arg-max agreement.
  const TaskBatch held_out = labelled_rows(30, 2);
  EvalSet set;
  set.input_ids = held_out.input_ids;
  set.attention_mask = held_out.attention_mask;
  set.targets = held_out.targets;
  set.label_names = {"a", "b", "c"};
  set.source = "rows";
  const EvalReport r = evaluate_model(task, single_process_groups(), set, {.batch_size = 7});
  torch::NoGradGuard no_grad;
  model->eval();
  auto predicted = model->forward(held_out.input_ids, held_out.attention_mask).logits.argmax(-1);
  EXPECT_DOUBLE_EQ(r.accuracy,
                   predicted.eq(held_out.targets).to(torch::kDouble).mean().item<double>());
  EXPECT_TRUE(r.classification());
  EXPECT_EQ(r.predicted, 30);
  EXPECT_EQ(r.layers.size(), 2u);
  EXPECT_GT(r.macro_f1, 0.0);

  // A causal-LM set is refused for a classifier.
  set.targets = held_out.input_ids;
  EXPECT_THROW(evaluate_model(task, single_process_groups(), set, {}), ConfigError);
}

TEST(ClassificationTraining, RouterFineTuningLeavesEveryOtherParameterBitwiseUnchanged) {
  config::RouterConfig mlp;
  mlp.mutable_mlp()->set_hidden(16);
  auto model = tiny_classifier(mlp);
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : model->named_parameters()) before[p.key()] = p.value().detach().clone();
  config::TrainConfig t;
  t.set_learning_rate(1e-2);
  Trainer trainer(TaskModel::sequence_classification(model), single_process_groups(), t);
  for (int i = 0; i < 3; ++i) trainer.step({labelled_rows(8, 3)});
  int changed = 0;
  for (const auto& p : model->named_parameters()) {
    const bool same = torch::equal(p.value(), before[p.key()]);
    if (p.key().find(".router.") != std::string::npos)
      changed += !same;
    else
      EXPECT_TRUE(same) << p.key() << " moved";
  }
  EXPECT_EQ(changed, int(trainer.trainable().size()));
  EXPECT_GT(changed, 0);
}

}  // namespace
