"""faceweave.enhance"""
