! The original cmflib's Fortran example, with the mlmd file as the first argument (default: ./mlmd).  Run it
! inside a cmf workspace (cmf init).
program main

  use cmflib, only : cmf_type

  implicit none

  type(cmf_type) :: cmf
  character(len=4096) :: mlmd

  mlmd = "mlmd"
  if (command_argument_count() > 0) call get_command_argument(1, mlmd)

  call cmf%initialize(trim(mlmd), "pipeline_name", "context_name", "execution_name")
  if (.not. cmf%initialized()) then
    write(*,*) "CMF did not initialize successfully"
    error stop 1
  endif

  call cmf%log_metric("test_metric", ["train_loss"], ["1"], 1)
  call cmf%log_metric("test_metric", [character(len=10) :: "train_loss", "accuracy"], [character(len=13) :: &
                      "0.5", "[0.9,0.95,1]"])
  call cmf%commit_metrics("test_metric")

  call cmf%finalize()

end program main
