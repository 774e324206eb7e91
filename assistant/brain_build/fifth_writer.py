"""Phrasing families by a fifth writer, for training only.

Written in a separate session from the tool descriptions alone (polite, indirect writers who wrap the request in
context, and people from other fields (a teacher, a lawyer, a shop owner, a biologist) who say what they want in
their own domain's words), without seeing phrasings.py, the held-out families or the other writers' families. Never
held out and rendered from their own random stream (`data.WRITERS`). Same template syntax as phrasings.py.
"""

from __future__ import annotations

FIFTH_WRITER: dict[str, dict[str, list[str]]] = {
    "audit_dataset": {
        "polite": [
            "I was wondering whether you could take a look at {path} and tell me if anything seems off with it?",
            "would it be possible to check my data for duplicates and broken rows before I go any further? no "
            "changes, just a report",
            "Sorry to bother you, but could you have a look through {path} for any personal information that "
            "shouldn't be there?",
            "If it isn't too much trouble, I'd appreciate a quick health check of the dataset. I'm not confident "
            "it's in good shape.",
            "Before we train anything, might it be worth checking whether {path} overlaps with {eval}? I'd hate to "
            "be testing on training examples.",
            "I hope this makes sense: I'd like to know whether my examples are [well|evenly] balanced across labels, "
            "and whether the lengths look reasonable",
            "Would you mind auditing {path} for me? Just a report is fine, please don't modify anything.",
            "I'm a little worried my file has some malformed lines in it. Could you possibly check it over and let "
            "me know what you find?",
        ],
        "lawyer": [
            "Please conduct a review of {path}, due diligence style: formatting defects, duplicate entries and any "
            "personally identifiable information. Findings only; do not alter the record.",
            "I need a findings memo on the training corpus before anything is relied upon. Flag names, addresses, "
            "phone numbers, anything confidential.",
            "Treat {path} as an exhibit: examine it, note every defect, and leave it untouched.",
            "From a compliance standpoint I must confirm that no client data sits in {path}. Examine it and report.",
            "Establish whether any material in {path} also appears in {eval}. I need to know if the evaluation is "
            "tainted.",
            "Produce a report on the condition of my dataset: broken entries, repetition, and whether the categories "
            "are evenly represented",
            "Before we proceed I'd like the documents vetted for privacy exposure and duplicates. Report back "
            "without making changes.",
            "review {path} against {eval} for cross-contamination and give me an itemised list of [issues|problems]",
        ],
    },
    "clean_dataset": {
        "courteous": [
            "Would it be possible to make a tidied-up copy of {path}, without the duplicates and broken lines? Maybe "
            "save it as {out}?",
            "I was hoping you could remove any personal details from the data, and keep the original as it is",
            "If you don't mind, could you strip out the rows that also appear in {eval} and write the result to "
            "{out}?",
            "I wonder if you might clean up {path} for me. I think there are a few repeats and some emails that "
            "ought to be redacted.",
            "Could I ask you to produce a cleaned version of my dataset? Whatever you think should be dropped, "
            "please drop it.",
            "Sorry, one more thing: would you be able to save a copy of {path} with the contaminated rows taken out?",
            "it would be lovely if the names and phone numbers could be masked in a fresh copy, {out} perhaps",
            "Perhaps we could fix the data first? A clean copy without the broken entries would be [really|ever so] "
            "helpful.",
        ],
        "teacher": [
            "I'd like to tidy up {path} the way I'd tidy a stack of marked papers: throw out the copies, the torn "
            "ones, and anything with a student's name on it. Save the neat pile to {out}.",
            "Some of these examples are also on the final exam ({eval}). Please take them out of the practice set "
            "and give me a clean copy.",
            "Can you black out any pupils' names and contact details in my data and keep a clean version separately?",
            "The practice material has duplicates and half-finished answers in it. Make me a corrected copy, please.",
            "Remove anything from {path} that overlaps with the test paper in {eval}, so nobody has seen the answers "
            "beforehand",
            "Please produce a clean handout version of {path} at {out}: no repeats, no broken entries, no private "
            "information",
            "I want to weed the junk out of my examples before the class uses them. Write the cleaned set somewhere "
            "new.",
            "like correcting homework before handing it back: fix up my data, drop the bad rows, redact the personal "
            "bits",
        ],
    },
    "split_dataset": {
        "hedging": [
            "I was wondering whether you could set aside {pct} of {path} for evaluation?",
            "Would it be possible to split my data into a training part and a test part? Maybe {frac} for testing, "
            "if that sounds sensible.",
            "If it's alright, I'd like to keep {n} examples aside for evaluation and train on the rest",
            "Could you perhaps divide {path} into train and eval? I was thinking of holding back around {pct}.",
            "I don't have a separate test set yet, so might you be able to carve one out of my data for me?",
            "Sorry if this is a basic request, but could you hold out {n} rows of {path} as an eval set?",
            "would you mind splitting the dataset, {frac} eval and the rest training",
            "I think I need a validation portion. Would it be possible to reserve about {pct} of the examples?",
        ],
        "biologist": [
            "Hold back {pct} of {path} as a validation cohort, the way you'd reserve samples for replication.",
            "Please partition the data into a training group and a held-out group, with {frac} in the held-out arm.",
            "I need a held-out set of {n} specimens from {path} that the model never sees during training",
            "Randomly allocate the rows to two groups, training and evaluation, with {pct} going to evaluation",
            "Set aside a reserve of {n} samples for validation; everything else goes to training.",
            "We always keep a blinded subset for testing. Can you split {path} so that {frac} of it is blinded?",
            "separate my records into discovery and validation sets, roughly {pct} for validation",
            "Split the dataset like a controlled experiment: most of it for fitting, a random held-out fraction for "
            "checking",
        ],
    },
    "inspect_dataset": {
        "polite": [
            "Would you mind showing me what's in {path}? Just the first {n} rows would be fine.",
            "I was wondering if I could have a quick look at the data: how many rows, and which fields it has",
            "Could you possibly open {path} and tell me what format it's in?",
            "If it's no trouble, I'd like to see a few example rows from my dataset before deciding anything",
            "Sorry, I've forgotten what columns this file has. Would you be able to show me {path}?",
            "Might I peek at {n} examples from the data, just to remind myself what they look like?",
            "would it be possible to get a quick overview of {path}: row count, fields, a couple of samples",
            "I'd be grateful if you could display some rows of the training file. No checks needed.",
        ],
        "shopkeeper": [
            "Show me what's on the shelves in {path}: how many items, what columns, and a few examples",
            "I just want a look at the stock. How many rows are in my data and what do they look like?",
            "Pull out {n} examples from {path} so I can see what I'm working with",
            "Like a quick walk through the stockroom: what's in this file and how is it laid out?",
            "Give me a headcount of the entries in {path} and show me a handful",
            "what kind of records are in my data? show me {n} of them",
            "Open up {path} and let me see the first few customer tickets",
            "I need a quick peek at the inventory list. No checking, just show it to me.",
        ],
    },
    "create_sample_dataset": {
        "polite": [
            "I don't have any data of my own yet. Would it be possible to create a sample set so I can try things "
            "out?",
            "I was wondering whether you could make me some {task} data to practise with, maybe {n} rows?",
            "Could you perhaps generate an example dataset of {task}? I'd just like to see how everything works.",
            "If it's not too much bother, a small sample dataset would help me get started",
            "Would you mind setting up the {task} sample for me, with {n} training examples?",
            "I'm only exploring for now, so might you write out a demo dataset I could use?",
            "Sorry, is there some example data you could make for me? {task} would be ideal.",
            "I'd appreciate a toy dataset to experiment on before I bring in my real files",
        ],
        "teacher": [
            "Before I use real student work, I'd like a practice set to try this on. Can you make one?",
            "Give me a demonstration dataset of {task}, about {n} examples, like a worked example for the class",
            "I want to show my colleagues how this works. Create some made-up {task} data for the demo.",
            "Make a sample worksheet, so to speak: {n} example rows of {task} to practise with",
            "Set up a dummy dataset so I can rehearse the whole process before doing it for real",
            "Could you prepare the {task} example set? I'd like to walk through the lesson with it.",
            "I need some practice material. Not real data, just something to learn the steps on.",
            "create a {task} sample with {n} rows so i can do a dry run",
        ],
    },
    "generate_synthetic": {
        "polite": [
            "I only have a handful of examples in {path}. Would it be possible to generate more like them, maybe "
            "{n}?",
            "I was wondering whether a teacher model could write extra training rows based on my seed examples?",
            "Could you perhaps use {method} to expand {path} into about {n} new examples?",
            "If it's not too much trouble, I'd like some synthetic data generated from my seeds and saved to {out}",
            "Would you be able to create {n} additional examples in the same style as the ones in {path}?",
            "I don't have enough data, I'm afraid. Might you synthesise some more from what I've got?",
            "would it work to grow my dataset with {method}? write the results to {out} please",
            "Sorry to ask so much, but could you generate a good batch of new examples from my seed file?",
        ],
        "shopkeeper": [
            "I've only got a few real customer questions in {path}. Can you invent {n} more that sound like them?",
            "Make more stock from the samples I have: {n} new rows written like the seed ones, saved to {out}",
            "My shop only gets so many emails. Write extra made-up ones in the same style so I have enough to train "
            "on.",
            "use {method} on {path} to whip up more examples, about {n}",
            "Take my handful of example enquiries and have the bigger model dream up lots more",
            "I need more data than I've got. Fill the shelves with synthetic examples based on {path}.",
            "Produce {n} fake but realistic customer messages from my seeds and put them in {out}",
            "Could the teacher model write new ones for me using {method}, copying the tone of my examples?",
        ],
    },
    "recommend_strategy": {
        "tentative": [
            "I was wondering whether fine-tuning is actually worth it here, or whether prompting would do. Could you "
            "check against my data?",
            "Would it be possible to measure how well the base model does on {path} with a few examples in the "
            "prompt, before we commit to training?",
            "I'm not sure I need to train at all. Might you test zero-shot and few-shot baselines on {eval} and "
            "advise?",
            "If you have a moment, could you help me decide between fine-tuning and just prompting, using {path}?",
            "Sorry if this is premature, but should I train a model or would a good prompt be enough? Please measure "
            "it on my data.",
            "I'd appreciate a recommendation: is training justified for {path}, judged against {eval}?",
            "Perhaps we could first find out how far prompting alone gets us, and then decide whether to fine-tune?",
            "would you mind running the baselines and telling me whether fine-tuning makes sense",
        ],
        "lawyer": [
            "Advise me whether fine-tuning is warranted on the evidence. Measure the prompted baseline on {path} "
            "first.",
            "I need an opinion, supported by numbers, on whether to train or simply prompt. Use {eval} as the test.",
            "Make the case for or against fine-tuning on this data, based on zero-shot and few-shot results.",
            "Before I sign off on the cost of training, establish whether prompting alone meets the standard",
            "Weigh the options, fine-tuning versus prompt engineering, and give me your recommendation based on "
            "{path}",
            "Is training necessary here, or is it overkill? Test the baselines on {eval} and give me a reasoned "
            "answer.",
            "Put the base model to the test on my data with and without examples, and tell me whether fine-tuning is "
            "justified",
            "determine, on the merits, whether {path} calls for a fine-tune",
        ],
    },
    "plan_training": {
        "polite": [
            "Would it be possible to estimate whether {method} training on {path} will fit in memory here?",
            "I was wondering what configuration you'd suggest for this machine. I don't want to run out of GPU "
            "memory.",
            "Could you perhaps work out a training setup that fits, with a batch size of {bs}?",
            "Before starting, might you check how much memory {method} would need for {steps} steps?",
            "I'd be grateful for a plan: which method and settings would fit on my GPU for {path}?",
            "Sorry, I'm not sure what's feasible on this hardware. Would you mind planning the run first?",
            "would it fit if I used {method} with batch size {bs}? please estimate before we train",
            "If you could choose sensible training settings for me without launching anything, that would be "
            "wonderful",
        ],
        "biologist": [
            "Before running the experiment I'd like to design the protocol: will {method} on {path} fit within this "
            "machine's resources?",
            "Do a feasibility estimate first, like a power calculation: memory needed, and a config that fits",
            "Plan the training run the way I'd plan a bench protocol: method, batch size, steps, all within what the "
            "GPU can hold",
            "Estimate the memory budget for {method} with batch size {bs} and {steps} steps, but don't start it yet",
            "What setup would let me train on {path} without exceeding the equipment's limits?",
            "I'd like the experimental design worked out before anything runs. Pick settings that fit this hardware.",
            "Will a batch of {bs} fit for {method}? Give me the estimate and a recommended configuration.",
            "draft a training plan for my data that fits on a target GPU, no run yet",
        ],
    },
    "train_sft": {
        "polite": [
            "I was wondering whether we could start fine-tuning on {path} now, using {method}?",
            "Would it be possible to train the model on my data for {epochs} epochs with a learning rate of {lr}?",
            "If everything looks ready, could you kick off a {method} fine-tune, maybe {steps} steps?",
            "Could I ask you to launch supervised training on {path}, evaluating on {eval}?",
            "Would you mind starting a {method} run with rank {rank} and batch size {bs}?",
            "I think I'm ready to train, if that's alright. Could you begin with {path}?",
            "perhaps we could try a fine-tune with learning rate {lr} for {steps} steps?",
            "Sorry, one more request: could you train on {path} with {method} for {epochs} epochs, and keep {eval} "
            "for evaluation?",
        ],
        "teacher": [
            "Teach the model using the examples in {path}, the way I'd take a class through worked answers, and test "
            "it on {eval}",
            "Start the lessons: fine-tune on my data with {method} for {epochs} epochs",
            "I want the model to learn from my marked examples. Run the training; {steps} steps should do.",
            "Coach the model on {path} with a learning rate of {lr}, and use {eval} as its end-of-term test",
            "Time to put it through school: {method}, rank {rank}, batch size {bs}",
            "Train it on the answer key in {path} so it marks the way I do",
            "Go through the course material {epochs} times with the model, {method} please",
            "let the model study my examples and pick up the style. start the training now",
        ],
    },
    "train_dpo": {
        "polite": [
            "I was wondering whether we could do preference tuning on {path}, with {method}?",
            "Would it be possible to train on my chosen and rejected pairs, beta {beta}, for {steps} steps?",
            "If you don't mind, I'd like to teach the model which answers I prefer, using the pairs in {path}",
            "Could you possibly start a {method} run on the preference data, learning rate {lr}?",
            "Would you mind launching preference training, with {eval} held out for evaluation?",
            "Sorry, I'm not sure I have this right, but could we use {method} on {path} to nudge it towards the "
            "better answers?",
            "perhaps a preference run with beta {beta} would be worth trying now?",
            "I'd be grateful if you could tune the model on my good-versus-bad answer pairs",
        ],
        "shopkeeper": [
            "I've marked which reply I'd send a customer and which I wouldn't, in {path}. Train it to prefer my "
            "picks.",
            "Teach it the house style: here are pairs of good and bad answers, use {method}",
            "Make it favour the replies my customers liked over the ones they complained about, {steps} steps",
            "Use my thumbs-up / thumbs-down pairs in {path} to tune the model, beta {beta}",
            "I want it to answer like my best staff member, not my worst. Train on the pairs with {method}, learning "
            "rate {lr}.",
            "Run the preference training on my good-reply bad-reply file and check it against {eval}",
            "start {method} on the customer reply comparisons",
            "it should learn which of two answers I'd rather give. please train it on {path}",
        ],
    },
    "distill": {
        "polite": [
            "I was wondering whether we could distil the big model into a smaller one, using {path}?",
            "Would it be possible to train a compact student model from the large teacher, in {mode} mode?",
            "Could you perhaps run distillation for {steps} steps on my data?",
            "If it's feasible, I'd like a smaller model that behaves like the big one. Might you set that up with "
            "{path}?",
            "Would you mind starting a {mode} distillation job?",
            "Sorry if this is ambitious, but could the large model's knowledge be transferred into a smaller one?",
            "perhaps we could try {mode} distillation on {path}, maybe {steps} steps",
            "I'd appreciate it if you could shrink the model down by distilling it, if that's possible",
        ],
        "shopkeeper": [
            "The big model is too pricey to run in the shop. Make me a small cheap one that answers just as well, "
            "trained on {path}.",
            "I want the smart expensive model's know-how copied into a little one I can afford to run",
            "Have the big one train a small one, {mode} style, for {steps} steps",
            "Can the large model pass its tricks down to a smaller model? Use my tickets in {path}.",
            "Cut my running costs: distil the teacher into a student model",
            "Like training a new apprentice from my best worker: the big model teaches, the small one learns. {mode} "
            "please.",
            "shrink it down so it runs on cheap hardware, copy what the big model does on {path}",
            "run the {mode} distillation, {steps} steps, I need a lighter model",
        ],
    },
    "evaluate": {
        "polite": [
            "Would it be possible to see how the fine-tuned model compares with the base model on {path}?",
            "I was wondering how much the training actually helped. Could you evaluate it?",
            "Could you perhaps test the new model on {n} examples from the eval set and compare it with the "
            "original?",
            "If you have time, I'd like to know whether my model beats a plain prompted baseline, with confidence "
            "intervals if possible",
            "Would you mind scoring the trained model on {path}?",
            "Sorry, I'm curious: is the tuned model really better than before? Might you measure it?",
            "perhaps we could run an evaluation on {n} rows, just to get a sense of things",
            "I'd be grateful for a comparison of the base, prompted and fine-tuned models on my test set",
        ],
        "teacher": [
            "Give the trained model its exam: {path} is the test paper. Compare its marks with the untrained one.",
            "Mark the new model against the old one on {n} questions and tell me how confident I can be in the "
            "difference",
            "Did the lessons stick? Test the fine-tuned model on the held-out questions.",
            "I want a report card: fine-tuned versus base versus just prompting, on {path}",
            "Grade the model's answers on the eval set and compare with where it started",
            "Set it a test of {n} questions and see whether it has improved",
            "How does my trained model score on the final exam compared with the original? Use {path}.",
            "end of term assessment please: measure the tuned model against the baseline",
        ],
    },
    "export_model": {
        "polite": [
            "I was wondering whether you could merge the adapter from {job} into the base model and save it?",
            "Would it be possible to export the model from run {job} so I can serve it?",
            "Could you perhaps package the finished model and check that it loads with vLLM?",
            "If it's no trouble, I'd like the trained model from {job} saved as a standalone model",
            "Would you mind preparing {job} for deployment?",
            "Sorry to ask, but could the adapter be merged in and the result tested for serving?",
            "perhaps we could export the latest trained model now?",
            "I'd appreciate it if you could turn {job} into a model I can actually use",
        ],
        "lawyer": [
            "Execute the final version: merge the adapter from {job} into the base model and confirm that it serves.",
            "Produce the finished deliverable from run {job}, merged and verified with vLLM",
            "Please finalise the model from {job} and put it on file, ready for production",
            "I need an executed copy of the trained model, adapter merged in, and proof that it can be served",
            "Make {job} final and binding, so to speak: save the merged model",
            "Prepare the model from {job} for handover to the client, merged and tested",
            "consolidate the adapter and the base into a single model and save it",
            "Draw up the final model from the last run and verify that it runs under vLLM",
        ],
    },
    "list_runs": {
        "polite": [
            "Would it be possible to see a list of my training runs?",
            "I was wondering which of my jobs are {status}. Could you show me?",
            "Could you perhaps list the last {n} runs and how they went?",
            "If you don't mind, I'd like an overview of all the jobs I've started",
            "Would you mind showing me the {status} runs?",
            "Sorry, I've lost track. Which training jobs do I have?",
            "might I see the {status} jobs, please",
            "I'd be grateful for a list of my {n} most recent runs with their metrics",
        ],
        "biologist": [
            "Show me my lab notebook: every training run, with its status and results",
            "List the experiments I've run so far and which ones are {status}",
            "Which of my runs are {status}? Give me the roster.",
            "I need a log of the last {n} experiments with their outcomes",
            "Tabulate all the training jobs, like a sample register, with their metrics",
            "give me an overview of all my experiments, past and present",
            "Pull up the {status} experiments, the latest {n}",
            "what runs have I got on the go, and how did each one turn out?",
        ],
    },
    "run_status": {
        "polite": [
            "I was wondering how {job} is getting on?",
            "Would it be possible to check the progress of my training run?",
            "Could you perhaps tell me what step {job} is on and how long it has left?",
            "Sorry to keep asking, but is the training nearly finished?",
            "Would you mind checking the loss on {job}?",
            "If you have a moment, how's the run going? Speed, ETA, anything really.",
            "might I ask where {job} is up to",
            "I'd be grateful for an update on the current job",
        ],
        "teacher": [
            "How far through the syllabus is {job}? Which step is it on, and when will it be done?",
            "Progress report on the training, please: how's the loss looking?",
            "Is the model keeping up with its lessons? Check on {job}.",
            "Where is the class up to in {job}, and how long until it finishes?",
            "Give me a quick progress check on the run, like a mid-term report",
            "how is {job} doing, is it learning?",
            "Is my training job still on track? Step count and time left, please.",
            "check in on {job} for me, how many steps are left",
        ],
    },
    "cancel_run": {
        "polite": [
            "I was wondering whether you could stop {job}? I think I set it up wrong.",
            "Would it be possible to cancel the current training run?",
            "Sorry, I've changed my mind about {job}. Could you please stop it?",
            "If it's not too late, could you call off the queued job?",
            "Would you mind halting {job}?",
            "I'm afraid I made a mistake with the settings. Might you abort the run?",
            "perhaps we should stop {job} before it goes any further",
            "I'd be grateful if you could cancel that run, it's not needed anymore",
        ],
        "lawyer": [
            "Terminate {job} with immediate effect.",
            "Please withdraw the pending job; we are no longer proceeding.",
            "I am instructing you to halt {job}.",
            "Cease the training run in progress, forthwith",
            "Strike {job} from the queue",
            "Discontinue the current run; the parameters were entered in error",
            "Put an end to {job}, the point is moot now",
            "stop the job, the matter is closed",
        ],
    },
    "resume_run": {
        "polite": [
            "I was wondering whether {job} could be picked up from where it stopped?",
            "Would it be possible to resume the run that failed overnight?",
            "Could you perhaps restart {job} from its last checkpoint?",
            "Sorry, I cancelled {job} by accident. Might you resume it?",
            "Would you mind continuing the interrupted training?",
            "If possible, I'd like to carry on with {job} rather than start again",
            "perhaps we could resume from the checkpoint?",
            "I'd be grateful if the crashed run could be continued",
        ],
        "biologist": [
            "The experiment {job} was interrupted. Resume it from the last checkpoint; don't restart from scratch.",
            "Pick up {job} where it left off, like thawing a frozen culture",
            "Continue the run that failed, from its last saved state",
            "Don't discard {job}. Restore it from the checkpoint and keep going.",
            "A power cut killed my run. Resume it, please.",
            "revive {job} from its most recent checkpoint",
            "Resume the stopped experiment; I don't want to lose the progress",
            "restart {job} from the saved point",
        ],
    },
    "probe_hardware": {
        "polite": [
            "I was wondering what kind of hardware this machine has?",
            "Would it be possible to check which GPUs are available here?",
            "Could you perhaps tell me how much memory this computer has, and whether it supports bf16?",
            "Sorry if this is obvious, but do I have a GPU on this machine?",
            "Would you mind having a look at the CPU, RAM and graphics cards?",
            "If it's easy, I'd like to know what this box is capable of before we plan anything",
            "might you check the machine's specs for me",
            "I'd be grateful for a summary of this computer's hardware",
        ],
        "shopkeeper": [
            "What have I got in the back room? CPU, memory, graphics card, the lot",
            "Take stock of this computer: how much RAM, and which GPU?",
            "I bought this machine second-hand. Tell me what's inside it.",
            "Is my computer beefy enough for this? Check what hardware it has.",
            "What equipment am I working with here?",
            "check what's under the hood of this PC",
            "Do an inventory of the hardware, including whether the card handles bf16",
            "how much memory and how many graphics cards have I got",
        ],
    },
    "help": {
        "polite": [
            "I was wondering what you're able to help with?",
            "Would it be possible to get a short overview of what this tool does?",
            "Sorry, I'm new here. Where would you suggest I begin?",
            "Could you perhaps tell me which commands are available?",
            "If you don't mind my asking, how does one use ftpilot?",
            "I'm not quite sure what I'm allowed to ask you. Might you explain?",
            "would you mind walking me through the things you can do",
            "I hope this isn't a silly question, but what is this assistant for?",
        ],
        "outsider": [
            "I'm a schoolteacher, not a programmer. What can this thing do for me, and where do I start?",
            "I run a small shop and someone told me to try this. How does it work?",
            "As a lawyer I'd like the terms of engagement: what services do you offer?",
            "I'm a biologist with some data. What's the procedure with this tool, step by step?",
            "Explain what you do in plain language, please. I don't come from computing.",
            "What's on the menu? I'm not technical.",
            "How do I get started with this? I've never trained a model in my life.",
            "what sort of jobs can I hand off to you",
        ],
    },
    "project": {
        "polite": [
            "I was wondering where we've got to with my project?",
            "Would it be possible to get a recap of what's been done so far?",
            "Sorry, I've been away for a bit. Could you remind me of the state of things?",
            "Could you perhaps tell me what the next step should be for my project?",
            "If you don't mind, what data does my project have at the moment?",
            "Might you summarise where I am before I carry on?",
            "would you mind telling me what's left to do",
            "I'd be grateful for a quick summary of my progress",
        ],
        "outsider": [
            "Give me the case summary: what's been filed, what's been done, what's outstanding",
            "Where are we in the lesson plan? What have we covered and what comes next?",
            "Like a stocktake of my project: what data is there, and what have we done with it?",
            "Lab notebook summary, please: which steps are complete and what's the next experiment?",
            "Bring me up to speed on my project",
            "Where do things stand with my project overall, and what should I do next?",
            "remind me what I've already done here and what's still to do",
            "I've come back after the weekend. Where did we leave off?",
        ],
    },
    "chat": {
        "polite": [
            "Thank you so much, that was really helpful.",
            "I was wondering, what's the actual difference between LoRA and full fine-tuning?",
            "Good morning! I hope you're well.",
            "Could you perhaps explain why DPO needs pairs of answers rather than single ones?",
            "Sorry if this is naive, but what does a learning rate actually do?",
            "Would you say fine-tuning is usually better than prompting, in general?",
            "I don't mean to take up your time, but what's the point of an eval set, conceptually?",
            "thanks, I appreciate your patience with me",
        ],
        "outsider": [
            "As a teacher I'm curious: is fine-tuning a model anything like teaching a student?",
            "In biology we worry about contaminated samples. Is that the same idea as train/eval overlap?",
            "I'm a lawyer. In your opinion, who owns a model that was fine-tuned on my firm's data?",
            "Is distillation a bit like an apprentice learning from a master?",
            "Just wanted to say, this is much easier than I expected for a shopkeeper like me!",
            "Why would a small model ever beat a big one? Genuinely curious.",
            "what's QLoRA in plain words? I'm not a computer person",
            "hello! long day at school, just saying hi",
        ],
    },
    "unclear": {
        "polite": [
            "I was wondering if you could do something with my data?",
            "Would it be possible to sort out the model?",
            "Could you perhaps have a go at {path}?",
            "Sorry, I'm not sure how to phrase this, but can you help with the thing we talked about?",
            "If you don't mind, could you deal with it?",
            "Might you improve things a bit?",
            "would you mind working on it a little",
            "I'd be grateful if you could handle the data side of things, somehow",
        ],
        "outsider": [
            "Do your magic on my files",
            "Process the documents, please",
            "I'd like the usual done to {path}",
            "Make the computer part work properly",
            "Can you sort my stock out?",
            "Run the thing on the data",
            "handle the model stuff for me",
            "I need this ready by Friday, whatever that takes",
        ],
    },
    "go_ahead": {
        "polite": [
            "Yes, that sounds good, please go ahead.",
            "If you think that's best, then by all means.",
            "I'd be happy for you to proceed with that.",
            "That seems sensible to me. Please do.",
            "Oh yes, would you? Thank you.",
            "Alright, let's do as you suggest.",
            "I trust your judgement, carry on",
            "yes please, if it's no trouble",
            "Agreed, for the record. Proceed.",
            "Sounds like a plan, let's give it a try",
        ],
    },
}
