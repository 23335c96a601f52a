from mcmdpo.train.cli import main_exit

main_exit()
