!> cmf's Fortran API: the original cmflib module, over the C library (log_metric.h).
!>
!>   type(cmf_type) :: cmf
!>   call cmf%initialize("mlmd", "pipeline", "stage", "execution")
!>   call cmf%log_metric("training", ["loss", "step"], ["0.25", "10"])   ! one step; dict_size is optional
!>   call cmf%commit_metrics("training")
!>   call cmf%finalize()
!>
!> Every procedure takes an optional `status` (0: done; else a CMF_ERR_* of log_metric.h, and last_error() says
!> why).  Without it a failure prints one line on stderr, as the C functions do; the program goes on.
module cmflib

  use iso_c_binding, only : c_char, c_int, c_size_t, c_null_char, c_ptr, c_loc, c_f_pointer, c_associated

  implicit none
  private

  interface
    integer(c_int) function cmf_try_init(mlmd_path, pipeline_name, context_name, execution_name) bind(C)
      import :: c_char, c_int
      character(kind=c_char), intent(in) :: mlmd_path(*), pipeline_name(*), context_name(*), execution_name(*)
    end function cmf_try_init

    integer(c_int) function is_cmf_initialized() bind(C)
      import :: c_int
    end function is_cmf_initialized

    integer(c_int) function cmf_try_log_metric(key, dict_keys, dict_values, dict_size) bind(C)
      import :: c_char, c_int, c_ptr
      character(kind=c_char), intent(in) :: key(*)
      type(c_ptr), intent(in) :: dict_keys(*), dict_values(*)
      integer(c_int), value :: dict_size
    end function cmf_try_log_metric

    integer(c_int) function cmf_try_commit_metrics(metrics_name) bind(C)
      import :: c_char, c_int
      character(kind=c_char), intent(in) :: metrics_name(*)
    end function cmf_try_commit_metrics

    integer(c_int) function cmf_try_finalize() bind(C)
      import :: c_int
    end function cmf_try_finalize

    type(c_ptr) function cmf_last_error() bind(C)
      import :: c_ptr
    end function cmf_last_error

    integer(c_size_t) function strlen(text) bind(C)
      import :: c_size_t, c_ptr
      type(c_ptr), value :: text
    end function strlen
  end interface

  type, public :: cmf_type
  contains
    procedure :: initialize
    procedure :: initialized
    procedure :: log_metric
    procedure :: commit_metrics
    procedure :: finalize
    procedure, nopass :: last_error
  end type cmf_type

contains

  !> A Fortran string as a C string: trailing blanks trimmed, NUL-terminated.
  pure function c_string(text) result(out)
    character(len=*), intent(in) :: text
    character(kind=c_char, len=len_trim(text) + 1) :: out
    out = trim(text) // c_null_char
  end function c_string

  !> The status to the caller, or the reason on stderr when the caller did not ask for it.
  subroutine report(code, status)
    integer(c_int), intent(in) :: code
    integer, intent(out), optional :: status
    if (present(status)) then
      status = int(code)
    else if (code /= 0) then
      write(0, '(a)') "cmf: error: " // last_error()
    end if
  end subroutine report

  !> Open (or create) the mlmd file and start the execution of a stage of a pipeline (nothing when cmf is
  !> initialized already, as the original).
  subroutine initialize(self, mlmd_path, pipeline_name, context_name, execution_name, status)
    class(cmf_type), intent(in) :: self
    character(len=*), intent(in) :: mlmd_path, pipeline_name, context_name, execution_name
    integer, intent(out), optional :: status
    if (self%initialized()) then
      if (present(status)) status = 0
      return
    end if
    call report(cmf_try_init(c_string(mlmd_path), c_string(pipeline_name), c_string(context_name), &
                             c_string(execution_name)), status)
  end subroutine initialize

  logical function initialized(self)
    class(cmf_type), intent(in) :: self
    initialized = is_cmf_initialized() == 1
  end function initialized

  !> One step of the metrics `key`: dict_values(i) is the value of dict_keys(i), as text ("10", "0.5", "[1,2]");
  !> the first dict_size of them (default: all).
  subroutine log_metric(self, key, dict_keys, dict_values, dict_size, status)
    class(cmf_type), intent(in) :: self
    character(len=*), intent(in) :: key
    character(len=*), intent(in) :: dict_keys(:), dict_values(:)
    integer, intent(in), optional :: dict_size
    integer, intent(out), optional :: status
    character(kind=c_char), allocatable, target :: text(:)
    type(c_ptr), allocatable :: keys(:), values(:)
    integer :: n, i, at

    n = min(size(dict_keys), size(dict_values))
    if (present(dict_size)) n = max(0, min(n, dict_size))
    allocate(keys(max(n, 1)), values(max(n, 1)))
    allocate(text(sum(len_trim(dict_keys(1:n))) + sum(len_trim(dict_values(1:n))) + 2 * n + 1))
    at = 1
    do i = 1, n
      call place(dict_keys(i), keys(i))
    end do
    do i = 1, n
      call place(dict_values(i), values(i))
    end do
    call report(cmf_try_log_metric(c_string(key), keys, values, int(n, c_int)), status)

  contains

    !> Copy `item` into `text` at `at`, NUL-terminated, and point `pointer` at it.
    subroutine place(item, pointer)
      character(len=*), intent(in) :: item
      type(c_ptr), intent(out) :: pointer
      integer :: k, length
      length = len_trim(item)
      do k = 1, length
        text(at + k - 1) = item(k:k)
      end do
      text(at + length) = c_null_char
      pointer = c_loc(text(at))
      at = at + length + 1
    end subroutine place

  end subroutine log_metric

  !> Write the steps of `metrics_name` as a Step_Metrics artifact of the execution.
  subroutine commit_metrics(self, metrics_name, status)
    class(cmf_type), intent(in) :: self
    character(len=*), intent(in) :: metrics_name
    integer, intent(out), optional :: status
    call report(cmf_try_commit_metrics(c_string(metrics_name)), status)
  end subroutine commit_metrics

  !> End the execution.
  subroutine finalize(self, status)
    class(cmf_type), intent(in) :: self
    integer, intent(out), optional :: status
    call report(cmf_try_finalize(), status)
  end subroutine finalize

  !> Why the last call failed ("" after one that succeeded).
  function last_error() result(message)
    character(len=:), allocatable :: message
    character(kind=c_char), pointer :: chars(:)
    type(c_ptr) :: text
    integer :: i, n
    text = cmf_last_error()
    n = 0
    if (c_associated(text)) n = int(strlen(text))
    allocate(character(len=n) :: message)
    if (n == 0) return
    call c_f_pointer(text, chars, [n])
    do i = 1, n
      message(i:i) = chars(i)
    end do
  end function last_error

end module cmflib
